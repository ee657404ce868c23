"""Models on a model server: the Open Inference Protocol client and inference over datasets."""

"""The models the method runs on: the StyleGAN2 generator and the model bundle with its identity."""

"""The autoencoders of a classic textbook chapter (plain, sparse, denoising) on MNIST."""

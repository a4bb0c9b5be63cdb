"""Paper sections 3-5: YCbCr, erosion, difference heatmaps, the masked score, and pictures of them."""

"""Quality metrics: the Shapes classifier (feature space of Shapes-FID / IS), image, audio and 3D metrics."""

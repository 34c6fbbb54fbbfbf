"""cagcl-mini: a laptop-scale teaching kit for fine-grained 3D CT vision-language pretraining."""

__version__ = "0.1.0"

"""The networks: vision encoders, the text encoder and its cache, anatomy mask pooling, the model.

- :mod:`~cagcl_mini.nn.vision`: MONAI-based 3D encoders that keep a spatial feature map;
- :mod:`~cagcl_mini.nn.text`: the bundled MiniLM (or any Hugging Face encoder), pooling, freezing;
- :mod:`~cagcl_mini.nn.text_cache`: hidden states of the frozen layers cached per string (and on
  disk);
- :mod:`~cagcl_mini.nn.digest`: a digest of weights, what caches that depend on them key on;
- :mod:`~cagcl_mini.nn.pooling`: masks at feature resolution, mean and attention mask pooling;
- :mod:`~cagcl_mini.nn.model`: ``AnatomyCLIP``, whose forward returns the losses' inputs.
"""

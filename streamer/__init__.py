"""Streaming fraud and anomaly detection worker.

The online side (this package) runs on onnxruntime, tokenizers and numpy alone;
the offline side that trains and exports the model bundles lives in ``models/``.
"""

__version__ = "0.1.0"

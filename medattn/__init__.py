"""medattn: attention mechanisms for medical image classification, tracked in MLflow.

Reproduces and extends the case study of Gonçalves, Rio-Torto, Teixeira and Cardoso,
"A survey on attention mechanisms for medical applications: are we moving towards better
algorithms?", IEEE Access 10:98909-98935, 2022.
"""

__version__ = "0.1.0"

"""What the SSD300 client, the model build, the serving helpers and the Python-backend models share.

- :mod:`ssd300_common.contract`: model, tensor, parameter and file names of the model repository.
- :mod:`ssd300_common.imaging`: image decoding and resizing (the client's and the server's).
- :mod:`ssd300_common.labels`: the 80 COCO classes.
- :mod:`ssd300_common.samples`: freely licensed sample photos.

Standard library, numpy and Pillow only: the Python-backend models import it from their packed
environment (``make python-env`` puts it there), and the serving image's export stage builds the
model without tritonclient. Importing the package itself imports nothing: import the module you
need.
"""

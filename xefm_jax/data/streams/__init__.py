"""The data side's streams, one file per modality (base.py says what a file defines).

Importing this package registers the built-in streams in their fixed order (the order of the
shard's packed flag columns, shards.SCHEMA_VERSION); it imports neither h5py nor PyAV (the
readers that need them are imported when a stream is read from a raw episode,
resample.EpisodeStreams). A stream added later registers after them:

    from xefm_jax.data.streams import base
    base.register(MyStream())   # in xefm_jax/data/streams/my_stream.py, or a test
"""

from xefm_jax.data.streams import base
from xefm_jax.data.streams import video  # noqa: F401  (registers, in this order)
from xefm_jax.data.streams import audio  # noqa: F401
from xefm_jax.data.streams import depth  # noqa: F401
from xefm_jax.data.streams import pose  # noqa: F401
from xefm_jax.data.streams import mocap  # noqa: F401
from xefm_jax.data.streams import imu  # noqa: F401
from xefm_jax.data.streams import language  # noqa: F401
from xefm_jax.data.streams import labels  # noqa: F401

BUILTIN: tuple[str, ...] = tuple(s.name for s in base.registered())
registered, get, register, inputs, group = (base.registered, base.get, base.register,
                                            base.inputs, base.group)

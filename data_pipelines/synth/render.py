"""Renders the six views and the depth map of an episode from its 3D scene.

Every view is ray cast from the same scene (scene.EpisodeSim): the static solids, the
movable objects at their per-frame poses, and both hands built from the 21 MANO joints
(a palm ellipsoid, 16 finger-bone cylinders and a forearm). Each camera has fixed ray
directions (fisheye rays from geometry.fisheye_unproject, pinhole rays from the rectified
K); the depth map is one more pinhole camera at the stereo-left pose with K * depth/scale.

Why this design (measured on one CPU core of a shared 2-core machine, small profile,
about 16M rays per 10 s episode; see the report in the change for the final numbers):
  * Every primitive kind is one convex solid in its own frame: the intersection of three
    slabs |x_i| <= h_i and a quadric sum_i q_i x_i^2 <= 1 (box: q = 0; sphere: q = 1/r^2;
    vertical cylinder: q = (1/r^2, 1/r^2, 0); ellipsoid: q = 1/h^2). One branch-free
    kernel intersects any of them, so candidates of mixed kinds share one loop.
  * Testing every ray against every solid (jit, scan over solids) cost about 5 ns per ray
    and solid: 2.6 s per episode for 32 solids, growing with the scene. The same test in
    vectorised numpy cost about 250 ns (one temporary array per operation), too slow even
    with ideal culling (16M rays x 5 tests = 20 s). So JAX, and rays are
    grouped into 8x8 pixel tiles with a precomputed cone (axis, angular radius). Per frame
    and tile, a jitted cull drops solids whose bounding sphere misses the cone or that lie
    wholly behind one of their faces while the whole cone points away from it; the host
    compacts the survivors into candidate lists. Tiles are then grouped by list length
    (4, 8, 16, ... up to `max_candidates`, nearest kept on overflow) and cast in blocks
    of `block_tiles` tiles, so a ray is tested against about 6 solids, not all of them,
    and each block's state stays in cache. Hands are ordinary solids here: their 36 small
    solids are candidates only on the few tiles they cover.
  * Kernel shapes depend on the profile only: chunks are padded to `chunk_frames`, the
    per-(frame, camera, solid) parameters live in a table of fixed size, and the tile
    layout does not depend on a device's calibration. One process compiles the kernels
    once per profile (about 5 s, cached on disk by synthesize.py).
Shading is Lambertian (a key light from above, ambient and a little light from the
camera) with procedural solid textures (checker, stripes, blocky value noise) so that
ego-motion produces optical flow, then gamma and hash-based sensor noise.
Depth is metric z-depth with noise growing as z^2, as stereo depth does; confidence
falls with range, at grazing angles and at silhouette edges.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import einops
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.synth import cameras as cameras_lib
from data_pipelines.synth import scene as scene_lib
from data_pipelines.synth.profiles import Profile
from xefm_jax.data import geometry, xperience

TILE = 8  # tile side in pixels; every image side is a multiple of it
TILE_RAYS = TILE * TILE
PARAMS = 18  # per solid and camera: R solid-from-camera (9), camera origin (3), h (3), q (3)
MATERIAL = 5  # r, g, b, texture id, texture period (m)
EPS_T = 1e-3  # metres: nearer hits are ignored (the camera's own housing)
PRIM_PAD = 16  # scene primitive counts are padded to a multiple of this (fewer compiles)
TEXTURE_IDS = {name: i for i, name in enumerate(scene_lib.TEXTURES)}

# MANO joints (xperience: wrist, then thumb, index, middle, ring, pinky, 4 each).
HAND_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8), (9, 10), (10, 11),
              (11, 12), (13, 14), (14, 15), (15, 16), (17, 18), (18, 19), (19, 20))
BONE_RADII = (0.013, 0.010, 0.009, 0.008) + (0.009, 0.008, 0.007) * 4  # metres
HAND_PRIMS = 1 + len(HAND_BONES) + 1  # palm, bones, forearm
LIGHT_DIR_WORLD = np.array([0.35, 0.25, 1.0]) / np.linalg.norm([0.35, 0.25, 1.0])
SKY = np.array([0.55, 0.60, 0.68])
# Depth noise std (m) = DEPTH_NOISE_A + DEPTH_NOISE_B * z^2: a 512 px stereo pair with a
# 6.4 cm baseline and about 0.07 px disparity noise; independent of the profile's sizes.
DEPTH_NOISE_A, DEPTH_NOISE_B = 0.001, 0.004


# ----------------------------------------------------------------------------- cameras


@dataclasses.dataclass(frozen=True)
class RenderCamera:
  """One ray-cast image: a video view or the depth map."""

  name: str  # a view name from xperience.VIEWS, or "depth"
  model: str  # "fisheye" or "pinhole"
  width: int
  height: int
  K: np.ndarray  # (4,)
  D: np.ndarray | None  # (4,) fisheye only
  T_c_b: np.ndarray  # (4, 4)
  max_theta: float = np.pi  # fisheye: rays farther off-axis are outside the image circle

  def rays(self) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) unit ray directions in the camera frame and (H, W) validity."""
    uv = geometry.pixel_grid(self.width, self.height)
    if self.model == "fisheye":
      d = geometry.fisheye_unproject(uv, self.K, self.D)
      d /= np.linalg.norm(d, axis=-1, keepdims=True)
      return d, np.arccos(np.clip(d[..., 2], -1, 1)) <= self.max_theta
    d = geometry.pinhole_unproject(uv, self.K)
    return d / np.linalg.norm(d, axis=-1, keepdims=True), np.ones(uv.shape[:2], bool)

  def project(self, p_cam: np.ndarray) -> np.ndarray:
    """(..., 3) camera points -> (..., 2) pixels (u, v); the inverse of `rays`."""
    if self.model == "fisheye":
      return geometry.fisheye_project(p_cam, self.K, self.D)
    return geometry.pinhole_project(p_cam, self.K)


def render_cameras(rig: cameras_lib.Rig, profile: Profile) -> tuple[RenderCamera, ...]:
  """The six views in xperience.VIEWS order, then the depth camera."""
  half_fov = np.radians(profile.fisheye_fov_deg) / 2
  cams = [RenderCamera(name, "fisheye", c.width, c.height, np.asarray(c.K), np.asarray(c.D),
                       np.asarray(c.T_c_b), half_fov)
          for name, c in zip(xperience.FISHEYE_VIEWS, rig.fisheye)]
  st = rig.stereo
  cams.append(RenderCamera("stereo_left", "pinhole", st.width, st.height, st.K, None, st.T_c0_b))
  cams.append(RenderCamera("stereo_right", "pinhole", st.width, st.height, st.K, None, st.T_c1_b))
  size = profile.depth_size
  cams.append(RenderCamera("depth", "pinhole", size, size,
                           cameras_lib.depth_intrinsics(rig, profile.depth_scale), None, st.T_c0_b))
  return tuple(cams)


@dataclasses.dataclass(frozen=True)
class TileTable:
  """The rays of all cameras grouped into 8x8 tiles (tiles outside a fisheye image circle
  are left out). T tiles in all, camera after camera."""

  dirs: np.ndarray  # (T, 64, 3) float32 unit rays, camera frame
  gain: np.ndarray  # (T, 64) float32 vignetting; 0 outside the fisheye image circle
  axis: np.ndarray  # (T, 3) float32 unit cone axis
  cos_r: np.ndarray  # (T,) float32 cosine of the cone's angular radius
  sin_r: np.ndarray  # (T,)
  cam: np.ndarray  # (T,) int32 camera index
  grid: np.ndarray  # (T,) int64 index of the tile in its camera's full (H/8 x W/8) grid
  spans: tuple[tuple[int, int], ...]  # per camera: its [start, end) tiles

  @classmethod
  def build(cls, cams: tuple[RenderCamera, ...]) -> "TileTable":
    parts = {k: [] for k in ("dirs", "gain", "axis", "radius", "cam", "grid")}
    spans, start = [], 0
    for ci, cam in enumerate(cams):
      d, valid = cam.rays()
      theta = np.arccos(np.clip(d[..., 2], -1, 1))
      gain = np.where(valid, 1.0 - 0.35 * (theta / np.pi * 2) ** 2, 0.0)  # mild vignette
      tile = lambda a: einops.rearrange(a, "(ty py) (tx px) ... -> (ty tx) (py px) ...",
                                        py=TILE, px=TILE)
      # Fisheye tiles wholly outside the image circle (radius about W/2) are never cast.
      # The test is on pixel positions, not on the rays, so every rig of a profile has the
      # same tiles and the kernels compile once per profile, not once per device.
      uv = tile(geometry.pixel_grid(cam.width, cam.height))
      r_px = np.linalg.norm(uv - np.array([cam.width, cam.height]) / 2, axis=-1).min(1)
      keep = r_px <= 0.54 * cam.width if cam.model == "fisheye" else np.ones(len(uv), bool)
      d, gain = tile(d)[keep], tile(gain)[keep]
      grid = np.nonzero(keep)[0]
      axis = d.sum(1)
      axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
      # Every ray of the tile, valid or not, lies within the radius: the kernel casts all.
      radius = np.arccos(np.clip(np.einsum("tpk,tk->tp", d, axis), -1, 1)).max(1) + 1e-3
      for k, v in zip(("dirs", "gain", "axis", "radius", "grid"), (d, gain, axis, radius, grid)):
        parts[k].append(v)
      parts["cam"].append(np.full(len(d), ci))
      spans.append((start, start + len(d)))
      start += len(d)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return cls(cat["dirs"].astype(np.float32), cat["gain"].astype(np.float32),
               cat["axis"].astype(np.float32), np.cos(cat["radius"]).astype(np.float32),
               np.sin(cat["radius"]).astype(np.float32), cat["cam"].astype(np.int32),
               cat["grid"], tuple(spans))


# ----------------------------------------------------------------------------- primitives


def shape_params(p: scene_lib.Primitive) -> tuple[np.ndarray, np.ndarray, float]:
  """Slab half extents h (3,), quadric coefficients q (3,) and bounding radius."""
  size = tuple(float(s) for s in p.size)
  if p.kind == "box" and len(size) == 3 and min(size) > 0:
    return np.array(size), np.zeros(3), float(np.linalg.norm(size))
  if p.kind == "sphere" and len(size) == 1 and size[0] > 0:
    r = size[0]
    # Slabs slightly outside the sphere, so the quadric is always the binding surface.
    return np.full(3, r * 1.001), np.full(3, 1 / r**2), r * 1.001
  if p.kind == "cylinder" and len(size) == 2 and min(size) > 0:
    r, hh = size
    h = np.array([r * 1.001, r * 1.001, hh])
    return h, np.array([1 / r**2, 1 / r**2, 0.0]), float(np.hypot(r, hh))
  raise ValueError(f"Primitive {p.name!r}: kind {p.kind!r} with size {p.size} is not one of "
                   f"{scene_lib.PRIMITIVE_KINDS} with positive sizes (box: 3 half extents, "
                   "sphere: (r,), cylinder: (r, half_height))")


def material(p: scene_lib.Primitive) -> np.ndarray:
  if p.texture not in TEXTURE_IDS:
    raise ValueError(f"Primitive {p.name!r}: texture {p.texture!r}, expected one of "
                     f"{scene_lib.TEXTURES}")
  return np.array([*p.color, TEXTURE_IDS[p.texture], max(p.texture_scale, 1e-3)])


def _frame_from_axis(z: np.ndarray) -> np.ndarray:
  """(..., 3) unit vectors -> (..., 3, 3) rotations whose third column is z."""
  helper = np.where(np.abs(z[..., 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
  x = np.cross(helper, z)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return np.stack([x, np.cross(z, x), z], -1)


def hand_solids(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Solids of hands from MANO joints.

  joints: (..., 21, 3) world. Returns T_world_solid (..., HAND_PRIMS, 4, 4), h and q
  (..., HAND_PRIMS, 3) and a validity mask (...) (False where a joint is not finite).
  Order: palm ellipsoid, the 16 bones of HAND_BONES, forearm.
  """
  valid = np.isfinite(joints).all((-1, -2))
  j = np.where(valid[..., None, None], joints, 0.0)
  j = j + np.arange(21)[:, None] * 1e-6  # no two joints coincide, so every bone has an axis
  lead = j.shape[:-2]
  a = j[..., [b[0] for b in HAND_BONES], :]
  b = j[..., [b[1] for b in HAND_BONES], :]
  axis = b - a
  length = np.linalg.norm(axis, axis=-1)
  radii = np.broadcast_to(np.array(BONE_RADII), length.shape)
  bone_R = _frame_from_axis(axis / length[..., None])
  bone_T = geometry.make_se3(bone_R, (a + b) / 2)
  # Bones reach half a radius past each joint, so the finger looks continuous.
  bone_h = np.stack([radii * 1.001, radii * 1.001, length / 2 + radii / 2], -1)
  bone_q = np.stack([1 / radii**2, 1 / radii**2, np.zeros_like(radii)], -1)

  wrist, index, middle, pinky = j[..., 0, :], j[..., 5, :], j[..., 9, :], j[..., 17, :]
  x = middle - wrist
  palm_len = np.linalg.norm(x, axis=-1)
  x = x / palm_len[..., None]
  y = index - pinky
  y = y - (y * x).sum(-1, keepdims=True) * x
  palm_w = np.linalg.norm(y, axis=-1)
  y = y / np.maximum(palm_w, 1e-9)[..., None]
  palm_R = np.stack([x, y, np.cross(x, y)], -1)
  palm_h = np.stack([palm_len / 2 + 0.008, palm_w / 2 + 0.012, np.full(lead, 0.014)], -1)
  palm_T = geometry.make_se3(palm_R, (wrist + j[..., [5, 9, 13, 17], :].mean(-2)) / 2)
  # Forearm: a cylinder behind the wrist along the palm axis (sleeve coloured).
  fore_R = _frame_from_axis(x)
  fore_T = geometry.make_se3(fore_R, wrist - x * 0.115)
  fore_h = np.broadcast_to(np.array([0.0301, 0.0301, 0.105]), lead + (3,))
  fore_q = np.broadcast_to(np.array([1 / 0.03**2, 1 / 0.03**2, 0.0]), lead + (3,))

  T = np.concatenate([palm_T[..., None, :, :], bone_T, fore_T[..., None, :, :]], -3)
  h = np.concatenate([palm_h[..., None, :], bone_h, fore_h[..., None, :]], -2)
  q = np.concatenate([1 / palm_h[..., None, :] ** 2, bone_q, fore_q[..., None, :]], -2)
  return T, h, q, valid


def hand_materials(skin: np.ndarray, sleeve: np.ndarray) -> np.ndarray:
  """(HAND_PRIMS, MATERIAL): skin-coloured palm and bones, a sleeve on the forearm."""
  m = np.tile(np.array([*skin, TEXTURE_IDS["plain"], 1.0]), (HAND_PRIMS, 1))
  m[-1, :3] = sleeve
  m[-1, 3] = TEXTURE_IDS["noise"]
  m[-1, 4] = 0.02
  return m


def bounding_radius(h: np.ndarray, q: np.ndarray) -> np.ndarray:
  """(..., 3) slabs and quadrics -> (...) radius of a sphere holding the solid."""
  slab = np.linalg.norm(h, axis=-1)
  # The quadric bounds axis i by 1/sqrt(q_i) where q_i > 0.
  qr = np.where(q > 0, 1 / np.sqrt(np.maximum(q, 1e-30)), h)
  return np.minimum(slab, np.linalg.norm(np.minimum(qr, h), axis=-1))


# ----------------------------------------------------------------------------- kernels


def _local_rays(p, d):
  """Rays in a solid's frame.

  p: 18 parameter components (R solid-from-camera row-major, camera origin in the solid's
  frame, h, q), each broadcastable against the rays; d: 3 camera-frame direction
  components. Returns the origin and direction components in the solid's frame.
  """
  o = [p[9 + i] for i in range(3)]
  dl = [p[3 * i] * d[0] + p[3 * i + 1] * d[1] + p[3 * i + 2] * d[2] for i in range(3)]
  return o, dl


def _hit_distance(p, d) -> jnp.ndarray:
  """Distance along unit rays to the convex solid with parameters p (inf on a miss).

  p, d: components as in _local_rays. The solid is {x : |x_i| <= h_i, sum_i q_i x_i^2 <= 1}
  in its own frame. From inside it (a room modelled as one box around the camera) the exit
  distance is the hit.
  """
  o, dl = _local_rays(p, d)
  h, q = p[12:15], p[15:18]
  t_near, t_far = -jnp.inf, jnp.inf
  for i in range(3):
    # Reciprocals, not divisions: 2x faster here. A ray exactly in a face plane and
    # parallel to it gives 0 * inf = NaN, which compares false: a one-pixel miss at worst.
    inv = 1.0 / dl[i]
    t1, t2 = (-h[i] - o[i]) * inv, (h[i] - o[i]) * inv
    t_near = jnp.maximum(t_near, jnp.minimum(t1, t2))
    t_far = jnp.minimum(t_far, jnp.maximum(t1, t2))
  a = q[0] * dl[0] ** 2 + q[1] * dl[1] ** 2 + q[2] * dl[2] ** 2
  b = q[0] * o[0] * dl[0] + q[1] * o[1] * dl[1] + q[2] * o[2] * dl[2]  # half the linear term
  c = q[0] * o[0] ** 2 + q[1] * o[1] ** 2 + q[2] * o[2] ** 2 - 1
  disc = b * b - a * c
  quadric = a > 1e-12  # else the constraint does not depend on t: c <= 0 or never
  inv_a = 1.0 / jnp.where(quadric, a, 1.0)
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  t_near = jnp.maximum(t_near, jnp.where(quadric, (-b - root) * inv_a, -jnp.inf))
  t_far = jnp.minimum(t_far, jnp.where(quadric, (-b + root) * inv_a, jnp.inf))
  ok = jnp.where(quadric, disc >= 0, c <= 0) & (t_near <= t_far) & (t_far > EPS_T)
  return jnp.where(ok, jnp.where(t_near > EPS_T, t_near, t_far), jnp.inf)


@functools.partial(jax.jit, static_argnames=("spans",))
def _cull(axis, cos_r, sin_r, params, centre, bound, valid, *, spans):
  """Which solids each tile's rays may hit, and how near each is.

  axis (T, 3), cos_r, sin_r (T,): tile cones; spans: each camera's [start, end) tiles;
  params (F, C, P, 18); centre (F, C, P, 3) solid centres in camera frames; bound (F, P)
  bounding radii; valid (F, P). A solid is culled when its bounding sphere misses the
  tile's cone, or when it lies wholly behind one of its faces and the whole cone points
  away from that face. Returns (F, T, P) float32: distance to the bounding sphere, inf
  where culled.
  """
  r = bound[:, None, :]  # (F, 1, P)
  scores = []
  for ci, (t0, t1) in enumerate(spans):  # per camera: no gather of per-tile solid data
    ax, cr, sr = axis[t0:t1], cos_r[t0:t1, None], sin_r[t0:t1, None]
    c = centre[:, ci]  # (F, P, 3)
    dist = jnp.sqrt(jnp.sum(c * c, -1))[:, None, :]  # (F, 1, P)
    sin_a = jnp.clip(r / jnp.maximum(dist, 1e-9), 0.0, 1.0)
    cos_g = cr * jnp.sqrt(1 - sin_a**2) - sr * sin_a  # cos(beta + alpha): (F, Tc, P)
    dot = lambda v: sum(ax[None, :, None, k] * v[:, None, :, k] for k in range(3))  # (F, Tc, P)
    seen = (dist <= r) | (dot(c) >= cos_g * dist)
    p = params[:, ci]  # (F, P, 18)
    for i in range(3):
      a_n = dot(p[..., 3 * i:3 * i + 3])  # cone axis . face normal i
      o, h = p[:, None, :, 9 + i], p[:, None, :, 12 + i]
      seen &= ~(((o > h) & (a_n >= sr)) | ((o < -h) & (a_n <= -sr)))
    seen &= valid[:, None, :]
    scores.append(jnp.where(seen, jnp.maximum(dist - r, 0.0), jnp.inf))
  return jnp.concatenate(scores, 1)


def candidate_lists(score: np.ndarray, max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
  """Compacts cull scores (F, T, P) into candidate lists (F, T, max_candidates) int32 and
  their lengths (F, T) (before truncation).

  Done on the host: a vectorised prefix sum is cheaper here than top_k on the device.
  Lists keep solid order; only a tile with more candidates than max_candidates is sorted,
  keeping its nearest.
  """
  seen = np.isfinite(score)
  count = seen.sum(-1)
  f, t, p = np.nonzero(seen)  # row-major: each tile's candidates are consecutive
  i = np.arange(len(f))
  first = np.r_[True, (f[1:] != f[:-1]) | (t[1:] != t[:-1])]
  pos = i - np.maximum.accumulate(np.where(first, i, 0))  # place within the tile's list
  keep = pos < max_candidates
  cand = np.zeros(score.shape[:2] + (max_candidates,), np.int32)
  cand[f[keep], t[keep], pos[keep]] = p[keep]
  over = np.nonzero(count > max_candidates)
  if len(over[0]):
    cand[over] = np.argsort(score[over], -1, kind="stable")[:, :max_candidates]
  return cand, count


def _hash(x: jnp.ndarray) -> jnp.ndarray:
  """uint32 -> uint32 avalanche (lowbias32): cheap deterministic per-pixel randomness."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _triangular(h: jnp.ndarray, byte: int) -> jnp.ndarray:
  """Zero-mean, unit-variance noise from two bytes of a uint32 hash (byte, byte + 1): the
  sum of two uniforms. 256 levels are plenty for noise of a few grey levels."""
  u = ((h >> (8 * byte)) & 0xFF).astype(jnp.float32) + ((h >> (8 * byte + 8)) & 0xFF)
  return (u / 255.0 - 1.0) * np.float32(np.sqrt(6.0))


@jax.jit
def _trace(dirs, tiles, rows, count, table):
  """Nearest hit of each ray of a block of tiles.

  dirs (T, 64, 3): the tile table's rays; tiles (B,) int32; rows (B, K) int32: each
  tile's candidate solids as rows of `table` (R, 18) (one row per frame, camera and
  solid), of which count (B,) are real. Returns t (B, 64) distance (inf: no hit) and the
  row hit (B, 64) (-1: none). Compiled once per K: keep K's few (see candidate_buckets).
  """
  B, K = rows.shape
  d = jnp.moveaxis(dirs[tiles], -1, 0)  # (3, B, 64)
  p = jnp.transpose(table[rows], (1, 2, 0))[..., None]  # (K, 18, B, 1): components contiguous

  def step(carry, xs):  # the carry is (B, 64): it stays in cache across the K steps
    best_t, best_k = carry
    pk, k = xs  # (18, B, 1), ()
    t = jnp.where(k < count[:, None], _hit_distance(list(pk), list(d)), jnp.inf)
    better = t < best_t
    return (jnp.where(better, t, best_t), jnp.where(better, k, best_k)), None

  init = (jnp.full((B, TILE_RAYS), jnp.inf, jnp.float32), jnp.zeros((B, TILE_RAYS), jnp.int32))
  (t, slot), _ = jax.lax.scan(step, init, (p, jnp.arange(K, dtype=jnp.int32)))
  return t, jnp.where(jnp.isfinite(t), jnp.take_along_axis(rows, slot, 1), -1)


@jax.jit
def _shade(dirs, gain, cam, tiles, frames, t, hit_row, table, num_solids, materials, light,
           up, frame_keys, noise_std, depth_noise):
  """Colour and depth of the rays of a block of tiles, given their hits (see _trace).

  table (R, 18) rows of (frame, camera, solid) with num_solids solids per camera;
  materials (>= num_solids, 5); light, up (F, C, 3) in camera frames; frame_keys (F,)
  uint32 noise seeds. Returns rgb uint8 (B, 64, 3) and, each (B, 64): z (exact z-depth,
  0 on a miss), z with depth noise and the cosine of incidence.
  """
  F, C, _ = light.shape
  d = dirs[tiles]  # (B, 64, 3)
  fc = frames * C + cam[tiles]  # (B,)
  found = hit_row >= 0
  row = jnp.maximum(hit_row, 0)
  hit = row % num_solids  # the solid
  ph = table[row]  # (B, 64, 18) the solid hit, seen from this ray's camera
  ph = [ph[..., k] for k in range(18)]
  m = materials[hit]  # (B, 64, 5)
  tt = jnp.where(found, t, 0.0)
  dc = [d[..., k] for k in range(3)]
  o, dl = _local_rays(ph, dc)
  x = [o[k] + tt * dl[k] for k in range(3)]  # hit point in the solid's frame
  h, q = ph[12:15], ph[15:18]
  # The binding surface: the slab face or the quadric nearest its boundary.
  s = [jnp.abs(x[k]) / h[k] for k in range(3)]
  s_max = jnp.maximum(jnp.maximum(s[0], s[1]), s[2])
  quad_val = q[0] * x[0] ** 2 + q[1] * x[1] ** 2 + q[2] * x[2] ** 2
  use_quad = ((q[0] + q[1] + q[2]) > 0) & (jnp.abs(quad_val - 1) <= jnp.abs(s_max - 1) + 1e-4)
  n_local = [jnp.where(use_quad, q[k] * x[k],
                       jnp.where(s[k] >= s_max, jnp.where(x[k] < 0, -1.0, 1.0), 0.0))
             for k in range(3)]
  # Back to the camera frame: n_j = sum_k R[k, j] n_local_k (R is solid-from-camera).
  n = [sum(ph[3 * k + j] * n_local[k] for k in range(3)) for j in range(3)]
  facing = n[0] * dc[0] + n[1] * dc[1] + n[2] * dc[2]
  # Unit normal on the side the camera sees.
  scale = jnp.where(facing > 0, -1.0, 1.0) * jax.lax.rsqrt(
      jnp.maximum(n[0] ** 2 + n[1] ** 2 + n[2] ** 2, 1e-24))
  n = [n[k] * scale for k in range(3)]
  cos_inc = jnp.abs(facing) * jnp.abs(scale)

  # Solid textures in the solid's frame, so they move with it and ego-motion makes flow.
  inv_period = 1.0 / m[..., 4]
  cell = [jnp.floor(x[k] * inv_period + 0.25).astype(jnp.int32) for k in range(3)]
  checker = ((cell[0] + cell[1] + cell[2]) % 2 == 0).astype(jnp.float32)
  stripe = (jnp.floor((x[0] + x[1] + x[2]) * inv_period).astype(jnp.int32) % 2).astype(jnp.float32)
  cell_key = (cell[0].astype(jnp.uint32) * jnp.uint32(0x8DA6B343)
              ^ cell[1].astype(jnp.uint32) * jnp.uint32(0xD8163841)
              ^ cell[2].astype(jnp.uint32) * jnp.uint32(0xCB1AB31F)
              ^ hit.astype(jnp.uint32) * jnp.uint32(0x165667B1))
  value = (_hash(cell_key) >> 8).astype(jnp.float32) * np.float32(1 / (1 << 24))
  tex = m[..., 3]
  albedo_scale = jnp.where(
      tex == TEXTURE_IDS["checker"], 0.55 + 0.45 * checker,
      jnp.where(tex == TEXTURE_IDS["stripes"], 0.7 + 0.3 * stripe,
                jnp.where(tex == TEXTURE_IDS["noise"], 0.6 + 0.4 * value, 1.0)))
  lc = light.reshape(F * C, 3)[fc]  # (B, 3)
  uc = up.reshape(F * C, 3)[fc]
  diffuse = jnp.maximum(sum(n[k] * lc[:, k, None] for k in range(3)), 0.0)
  shade = albedo_scale * (0.30 + 0.55 * diffuse + 0.25 * cos_inc) / (1.0 + 0.03 * tt)
  sky_t = jnp.clip(0.5 + 0.5 * sum(dc[k] * uc[:, k, None] for k in range(3)), 0.0, 1.0)
  g = gain[tiles]

  ray = (tiles[:, None] * TILE_RAYS + jnp.arange(TILE_RAYS)[None]).astype(jnp.uint32)
  h1 = _hash(ray ^ frame_keys[frames][:, None])  # per ray and frame: 8 bytes of noise
  h2 = _hash(h1 ^ jnp.uint32(0x5BD1E995))
  noises = (_triangular(h1, 0), _triangular(h1, 2), _triangular(h2, 0), _triangular(h2, 2))
  rgb = []
  for ch in range(3):
    color = jnp.where(found, m[..., ch] * shade, SKY[ch] * (0.7 + 0.3 * sky_t)) * g
    srgb = jnp.sqrt(jnp.clip(color, 0.0, 1.0)) + noise_std * noises[ch]  # gamma 2
    rgb.append(jnp.clip(jnp.round(srgb * 255), 0, 255).astype(jnp.uint8))
  rgb = jnp.stack(rgb, -1)

  z = tt * dc[2]
  sigma = depth_noise * (DEPTH_NOISE_A + DEPTH_NOISE_B * z * z)
  z_noisy = z + sigma * noises[3]
  return rgb, z, z_noisy, cos_inc


# ----------------------------------------------------------------------------- episode


@dataclasses.dataclass
class RenderedChunk:
  """The rendered frames [start, start + F) of an episode."""

  start: int
  views: dict[str, np.ndarray]  # view name -> (F, H, W, 3) uint8 RGB
  depth: np.ndarray  # (F, Hd, Wd) float32 metres, 0 where invalid
  confidence: np.ndarray  # (F, Hd, Wd) uint8
  depth_exact: np.ndarray  # (F, Hd, Wd) float32 noise-free z (0 on a miss), for the SLAM map


@dataclasses.dataclass
class RenderStats:
  frames: int = 0
  rays: int = 0  # rays cast (tiles x 64), padding excluded
  ray_tests: int = 0  # ray-solid intersection tests, bucket padding included
  overflow_tiles: int = 0  # tile-frames with more candidates than max_candidates


def _check_sim(sim: scene_lib.EpisodeSim) -> None:
  n = sim.num_frames
  expect = {
      "T_world_body": (n, 4, 4),
      "static_poses": (len(sim.static), 4, 4),
      "object_poses": (n, len(sim.objects), 4, 4),
      "hands_world": (n, 2, xperience.NUM_HAND_JOINTS, 3),
  }
  for name, shape in expect.items():
    got = np.shape(getattr(sim, name))
    if got != shape:
      raise ValueError(f"EpisodeSim {sim.name}: {name} has shape {got}, "
                       f"expected {shape}")
  for name in ("T_world_body", "static_poses", "object_poses"):
    if not np.all(np.isfinite(getattr(sim, name))):
      raise ValueError(f"EpisodeSim {sim.name}: {name} has non-finite values")


def wearer_colors(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Skin and sleeve colours (linear RGB) of a wearer, fixed by a seed."""
  rng = np.random.default_rng(seed)
  skins = np.array([[0.80, 0.55, 0.42], [0.62, 0.42, 0.30], [0.42, 0.27, 0.18],
                    [0.88, 0.66, 0.55], [0.30, 0.19, 0.12]])
  return skins[rng.integers(len(skins))], rng.uniform(0.1, 0.7, 3)


def candidate_buckets(max_candidates: int) -> tuple[int, ...]:
  """Candidate-list lengths that blocks are padded to, up to the maximum. Finer steps test
  fewer padded slots (most tiles have 2-6 candidates); each step is one more compile."""
  sizes = [k for k in (3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if k < max_candidates]
  return tuple(sizes) + (max_candidates,)


class Renderer:
  """Renders episodes for one rig and profile; reuse it across episodes (compiled once)."""

  def __init__(self, rig: cameras_lib.Rig, profile: Profile, noise: bool = True):
    self.profile = profile
    self.cams = render_cameras(rig, profile)
    self.tiles = TileTable.build(self.cams)
    self.noise = noise
    self.stats = RenderStats()
    tt = self.tiles
    self._dev = {k: jnp.asarray(getattr(tt, k))
                 for k in ("dirs", "gain", "axis", "cos_r", "sin_r", "cam")}
    self._T_b_c = np.stack([geometry.se3_inverse(c.T_c_b) for c in self.cams])  # (C, 4, 4)
    self._max_solids = -(-profile.max_solids // PRIM_PAD) * PRIM_PAD + 2 * HAND_PRIMS
    self._table_rows = profile.chunk_frames * len(self.cams) * self._max_solids

  @property
  def depth_camera(self) -> RenderCamera:
    return self.cams[-1]

  def render(self, sim: scene_lib.EpisodeSim, noise_seed: int = 0,
             skin_seed: int = 0) -> Iterator[RenderedChunk]:
    """Chunks of `profile.chunk_frames` frames, in order, covering the whole episode.

    noise_seed fixes the sensor noise; skin_seed the wearer's skin and sleeve colours.
    """
    _check_sim(sim)
    solids = list(sim.static) + list(sim.objects)
    if len(solids) > self.profile.max_solids:
      raise ValueError(f"EpisodeSim {sim.name}: {len(solids)} static and "
                       f"movable solids; profile {self.profile.name!r} renders at most "
                       f"{self.profile.max_solids} (Profile.max_solids)")
    n_pad = max(PRIM_PAD, -(-len(solids) // PRIM_PAD) * PRIM_PAD)
    h, q, bound = np.zeros((n_pad, 3)), np.zeros((n_pad, 3)), np.zeros(n_pad)
    mats = np.zeros((n_pad, MATERIAL))
    for k, p in enumerate(solids):
      h[k], q[k], bound[k] = shape_params(p)
      mats[k] = material(p)
    skin, sleeve = wearer_colors(skin_seed)
    hand_mats = hand_materials(skin, sleeve)
    materials = np.zeros((self._max_solids, MATERIAL), np.float32)
    materials[:n_pad + 2 * HAND_PRIMS] = np.concatenate([mats, hand_mats, hand_mats])
    materials = jnp.asarray(materials)
    F = self.profile.chunk_frames
    for start in range(0, sim.num_frames, F):
      frames = np.minimum(np.arange(start, start + F), sim.num_frames - 1)  # pad the tail
      keep = min(F, sim.num_frames - start)
      views, depth, conf, z = self._render_chunk(sim, frames, keep, h, q, bound, len(solids),
                                                 materials, noise_seed)
      self.stats.frames += keep
      yield RenderedChunk(start, {k: v[:keep] for k, v in views.items()}, depth[:keep],
                          conf[:keep], z[:keep])

  @staticmethod
  def _params(T_cam_world: np.ndarray, T_world_solid: np.ndarray, h: np.ndarray,
              q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel parameters of solids seen from cameras.

    T_cam_world (F, C, 4, 4); T_world_solid (F, S, 4, 4); h, q (F, S, 3).
    Returns params (F, C, S, 18) float32 and solid centres in camera frames (F, C, S, 3).
    """
    T = T_cam_world[:, :, None] @ T_world_solid[:, None]  # (F, C, S, 4, 4) camera from solid
    R_sc = np.swapaxes(T[..., :3, :3], -1, -2)
    centre = T[..., :3, 3]
    origin = -np.einsum("...ij,...j->...i", R_sc, centre)  # camera origin, solid frame
    F, C, S = T.shape[:3]
    hq = np.broadcast_to(np.concatenate([h, q], -1)[:, None], (F, C, S, 6))
    params = np.concatenate([R_sc.reshape(F, C, S, 9), origin, hq], -1)
    return params.astype(np.float32), centre.astype(np.float32)

  def _solids(self, sim, frames, h, q, bound, n_solids):
    """World poses, shapes, bounds and validity of every solid on `frames`: the scene's
    (padded to len(bound)), then the left hand's and the right hand's."""
    F, n_pad = len(frames), len(bound)
    T_ws = np.tile(np.eye(4), (F, n_pad, 1, 1))
    T_ws[:, :len(sim.static)] = sim.static_poses[None]
    T_ws[:, len(sim.static):n_solids] = sim.object_poses[frames]
    parts = [(T_ws, np.broadcast_to(h, (F, n_pad, 3)), np.broadcast_to(q, (F, n_pad, 3)),
              np.broadcast_to(bound, (F, n_pad)),
              np.broadcast_to(np.arange(n_pad) < n_solids, (F, n_pad)))]
    for side in range(2):
      T_wh, hh, qh, ok = hand_solids(sim.hands_world[frames, side])
      parts.append((T_wh, hh, qh, bounding_radius(hh, qh),
                    np.broadcast_to(ok[:, None], (F, HAND_PRIMS))))
    return [np.concatenate(x, 1) for x in zip(*parts)]

  def _render_chunk(self, sim, frames, keep, h, q, bound, n_solids, materials, noise_seed):
    """Renders `frames` (padded to chunk_frames; the first `keep` are real)."""
    prof, tiles, dev = self.profile, self.tiles, self._dev
    F = len(frames)
    T_cw = geometry.se3_inverse(sim.T_world_body[frames][:, None] @ self._T_b_c[None])
    T_ws, hs, qs, bs, valid = self._solids(sim, frames, h, q, bound, n_solids)
    params, centre = self._params(T_cw, T_ws, hs, qs)  # (F, C, P, 18), (F, C, P, 3)
    C, P = params.shape[1:3]
    score = _cull(dev["axis"], dev["cos_r"], dev["sin_r"], params, centre,
                  bs.astype(np.float32), valid, spans=tiles.spans)
    cand, count = candidate_lists(np.asarray(score)[:keep], prof.max_candidates)
    self.stats.overflow_tiles += int((count > prof.max_candidates).sum())
    # One fixed-size table of (frame, camera, solid) rows: the trace and shade kernels then
    # compile once per profile, whatever the scene's number of solids.
    table = np.zeros((self._table_rows, PARAMS), np.float32)
    table[:F * C * P] = params.reshape(-1, PARAMS)
    table = jnp.asarray(table)
    R_cw = T_cw[..., :3, :3]
    light = np.einsum("fcij,j->fci", R_cw, LIGHT_DIR_WORLD).astype(np.float32)
    up = R_cw[..., 2].astype(np.float32)  # world +z in camera frames
    frame_keys = ((frames.astype(np.uint64) * np.uint64(0x9E3779B1) + np.uint64(noise_seed))
                  % np.uint64(1 << 32)).astype(np.uint32)
    rgb, depth_out = self._cast(cand, np.minimum(count, prof.max_candidates), table, P,
                                (materials, light, up, frame_keys))
    views = {cam.name: self._image(rgb[:, slice(*tiles.spans[ci])], ci)
             for ci, cam in enumerate(self.cams[:-1])}
    dc = len(self.cams) - 1
    z, z_noisy, cos_inc = (self._image(a, dc) for a in depth_out[:3])
    depth, conf = depth_and_confidence(z, z_noisy, cos_inc, self._image(depth_out[3], dc, -1),
                                       prof.depth_min_m, prof.depth_max_m)
    return views, depth, conf, z

  def _cast(self, cand, count, table, P, shading):
    """Casts and shades every tile of the frames that have candidate lists.

    cand (F', T, K) and count (F', T): candidate solids per tile; table: (frame, camera,
    solid) rows with P solids per camera; shading: materials, light, up, frame keys.
    Returns rgb (F, T, 64, 3) and, on the depth camera's tiles (F, Td, 64): exact z,
    noisy z, cosine of incidence and the solid hit.
    """
    prof, tiles, dev = self.profile, self.tiles, self._dev
    F, T, C = prof.chunk_frames, len(tiles.cam), len(self.cams)
    noise = (np.float32(prof.sensor_noise if self.noise else 0.0),
             np.float32(1.0 if self.noise else 0.0))
    rgb = np.zeros((F, T, TILE_RAYS, 3), np.uint8)
    d0, d1 = tiles.spans[-1]
    depth_out = [np.zeros((F, d1 - d0, TILE_RAYS), dt)
                 for dt in (np.float32, np.float32, np.float32, np.int32)]
    block = prof.block_tiles
    lower = 0
    pending = []
    # Tiles are grouped by the length of their candidate list, so each is tested against
    # few padded slots; a block of tiles keeps its working set in cache. All blocks are
    # dispatched before any result is read, so host work overlaps the kernels.
    for k in candidate_buckets(prof.max_candidates):
      fi, ti = np.nonzero((count >= lower) & (count <= k))
      lower = k + 1
      for s in range(0, len(fi), block):
        bf, bt = fi[s:s + block], ti[s:s + block]
        n = len(bf)
        # Plain numpy arguments: jit takes them without a dispatch of its own.
        pad = lambda a: np.pad(a.astype(np.int32), [(0, block - n)] + [(0, 0)] * (a.ndim - 1))
        rows = ((bf * C + tiles.cam[bt]) * P)[:, None] + cand[bf, bt, :k]
        bt_j, bf_j = pad(bt), pad(bf)
        t, hit = _trace(dev["dirs"], bt_j, pad(rows), pad(count[bf, bt]), table)
        out = _shade(dev["dirs"], dev["gain"], dev["cam"], bt_j, bf_j, t, hit, table,
                     np.int32(P), *shading, *noise)
        pending.append((bf, bt, out + (hit,)))
        self.stats.rays += n * TILE_RAYS
        self.stats.ray_tests += block * TILE_RAYS * k
    for bf, bt, out in pending:
      n = len(bf)
      out = [np.asarray(a)[:n] for a in out]
      out[-1] = np.where(out[-1] >= 0, out[-1] % P, -1)  # table row -> solid
      rgb[bf, bt] = out[0]
      in_depth = (bt >= d0) & (bt < d1)
      for buf, a in zip(depth_out, out[1:]):
        buf[bf[in_depth], bt[in_depth] - d0] = a[in_depth]
    return rgb, depth_out

  def _image(self, tiled: np.ndarray, cam_index: int, fill=0) -> np.ndarray:
    """(F, Tc, 64, ...) values on one camera's tiles -> (F, H, W, ...) image."""
    cam = self.cams[cam_index]
    s, e = self.tiles.spans[cam_index]
    rows, cols = cam.height // TILE, cam.width // TILE
    if e - s < rows * cols:  # tiles outside a fisheye image circle were never cast
      full = np.full((tiled.shape[0], rows * cols) + tiled.shape[2:], fill, tiled.dtype)
      full[:, self.tiles.grid[s:e]] = tiled
      tiled = full
    return einops.rearrange(tiled, "f (ty tx) (py px) ... -> f (ty py) (tx px) ...",
                            ty=rows, py=TILE)


def depth_and_confidence(z: np.ndarray, z_noisy: np.ndarray, cos_inc: np.ndarray,
                         hit: np.ndarray, depth_min: float, depth_max: float):
  """Stereo-like depth and confidence from exact ray-cast depth.

  z, z_noisy, cos_inc, hit: (F, H, W). Returns depth float32 (0 where invalid: no surface,
  out of [depth_min, depth_max]) and confidence uint8, lower at far range, at grazing
  incidence and at silhouette edges (a neighbour on another solid or > 5 % farther).
  """
  valid = (hit >= 0) & (z >= depth_min) & (z <= depth_max)
  pad_z = np.pad(z, ((0, 0), (1, 1), (1, 1)), mode="edge")
  pad_id = np.pad(hit, ((0, 0), (1, 1), (1, 1)), mode="edge")
  H, W = z.shape[1:]
  edge = np.zeros(z.shape, bool)
  for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
    nz = pad_z[:, dy:dy + H, dx:dx + W]
    edge |= (pad_id[:, dy:dy + H, dx:dx + W] != hit) | (np.abs(nz - z) > 0.05 * z)
  conf = (np.exp(-z / 6.0) * np.sqrt(np.clip(cos_inc, 0, 1)) * np.where(edge, 0.35, 1.0))
  conf = np.where(valid, np.clip(np.round(255 * conf), 1, 255), 0).astype(np.uint8)
  depth = np.where(valid, np.clip(z_noisy, depth_min, depth_max), 0.0).astype(np.float32)
  return depth, conf


def depth_points_world(depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                       T_world_cam: np.ndarray) -> np.ndarray:
  """World points of the masked pixels of z-depth maps.

  depth, mask (F, H, W); K (4,) pinhole; T_world_cam (F, 4, 4). Returns (P, 3).
  """
  f, v, u = np.nonzero(mask)
  rays = geometry.pinhole_unproject(np.stack([u + 0.5, v + 0.5], -1), K)  # z = 1
  p_cam = rays * depth[f, v, u][:, None]
  R, t = T_world_cam[f, :3, :3], T_world_cam[f, :3, 3]
  return np.einsum("pij,pj->pi", R, p_cam) + t

"""The procedural world: vocabularies, places, objects, activities and session plans.

The world is small and fully known, so that every eval task has a ground truth that the
sensors can reveal:
  * ACTIONS: 14 verbs. Each has a characteristic hand, head and body motion (motion.py).
  * OBJECTS: 36 movable things in 19 categories. A category with several variants (cup,
    mug, glass) lets sessions differ in what they use, so held-out objects are a real split.
  * PLACES: kitchen, living room, workshop. A room box with textured walls, furniture at
    fixed positions, and workstations (counter, sink, stove, shelf, table, windowsill) where
    objects rest and the wearer stands to work.
  * ACTIVITIES: 10 main tasks, each a fixed procedure of subtasks, each subtask a sequence of
    (action, object) steps with optional and repeated steps. Order is fixed, so the next
    action is predictable from the current one and the state of the task.
A session is one wearer in one place doing 2-3 activities over several episodes; activities
and object variants change from session to session (`plan_sessions`).

Frames: world z up, metres, the room centred on the origin. A yaw is the heading angle
about z from the world x axis.
"""

from __future__ import annotations

import dataclasses
import math
import uuid

import numpy as np

from data_pipelines.synth.scene import Primitive
from xefm_jax.data import geometry

ACTIONS = ("reach", "grasp", "lift", "place", "pour", "stir", "cut", "wipe", "open", "close",
           "push", "walk", "turn", "look")
SURFACE = "@surface"  # a step target: the surface of the station the wearer stands at

# ----------------------------------------------------------------------------- objects


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """A movable object: its shape, look and how it is handled."""

  name: str
  category: str
  kind: str  # scene.PRIMITIVE_KINDS
  size: tuple[float, ...]  # as scene.Primitive.size
  color: tuple[float, float, float]
  texture: str = "plain"
  grip: str = "side"  # side: hand around it; top: palm on it; handle: fingers around a tool's
  #                    handle from above; both: one hand on each side
  contents: str | None = None  # what pouring from it releases
  container: bool = False  # objects placed on it go inside

  @property
  def display(self) -> str:
    return self.name.replace("_", " ")

  @property
  def half_height(self) -> float:
    return {"box": self.size[-1], "cylinder": self.size[-1], "sphere": self.size[0]}[self.kind]

  @property
  def radius(self) -> float:
    """Horizontal bounding radius."""
    return math.hypot(self.size[0], self.size[1]) if self.kind == "box" else self.size[0]

  def primitive(self) -> Primitive:
    return Primitive(self.name, self.kind, self.size, self.color, self.texture,
                     texture_scale=0.04 if self.texture != "plain" else 0.25)


def _o(name, category, kind, size, color, texture="plain", **kw) -> ObjectSpec:
  return ObjectSpec(name, category, kind, tuple(size), tuple(color), texture, **kw)


OBJECTS: dict[str, ObjectSpec] = {o.name: o for o in (
    _o("cup", "vessel", "cylinder", (0.040, 0.045), (0.93, 0.93, 0.90)),
    _o("mug", "vessel", "cylinder", (0.046, 0.050), (0.75, 0.15, 0.12), "stripes"),
    _o("glass", "vessel", "cylinder", (0.034, 0.065), (0.60, 0.80, 0.92)),
    _o("kettle", "heater", "cylinder", (0.085, 0.100), (0.70, 0.72, 0.76), "noise",
       contents="hot water"),
    _o("pot", "heater", "cylinder", (0.110, 0.080), (0.20, 0.20, 0.23), contents="hot water"),
    _o("tea_box", "tea", "box", (0.060, 0.040, 0.050), (0.20, 0.55, 0.25), "stripes",
       contents="tea leaves"),
    _o("tea_tin", "tea", "cylinder", (0.045, 0.060), (0.85, 0.70, 0.15), "noise",
       contents="tea leaves"),
    _o("coffee_jar", "coffee", "cylinder", (0.050, 0.070), (0.40, 0.25, 0.12),
       contents="ground coffee"),
    _o("spoon", "spoon", "box", (0.090, 0.015, 0.006), (0.82, 0.82, 0.85), grip="handle"),
    _o("wooden_spoon", "spoon", "box", (0.120, 0.020, 0.008), (0.70, 0.50, 0.30), "stripes",
       grip="handle"),
    _o("milk_carton", "milk", "box", (0.045, 0.045, 0.100), (0.90, 0.92, 0.97), "checker",
       contents="milk"),
    _o("milk_bottle", "milk", "cylinder", (0.040, 0.100), (0.96, 0.96, 0.90), contents="milk"),
    _o("plate", "dish", "cylinder", (0.120, 0.010), (0.92, 0.90, 0.85), grip="top"),
    _o("frying_pan", "dish", "cylinder", (0.130, 0.025), (0.10, 0.10, 0.11), "noise", grip="top"),
    _o("sponge", "cloth", "box", (0.050, 0.035, 0.020), (0.95, 0.85, 0.20), "noise", grip="top"),
    _o("dish_cloth", "cloth", "box", (0.100, 0.100, 0.006), (0.20, 0.40, 0.80), "checker",
       grip="top"),
    _o("cereal_box", "cereal", "box", (0.100, 0.035, 0.140), (0.90, 0.50, 0.10), "stripes",
       contents="cereal"),
    _o("bowl", "bowl", "cylinder", (0.080, 0.040), (0.25, 0.45, 0.80), container=True),
    _o("cutting_board", "board", "box", (0.180, 0.120, 0.012), (0.75, 0.55, 0.35), "stripes",
       grip="top"),
    _o("knife", "knife", "box", (0.120, 0.012, 0.004), (0.85, 0.85, 0.88), grip="handle"),
    _o("cleaver", "knife", "box", (0.110, 0.035, 0.004), (0.50, 0.50, 0.55), grip="handle"),
    _o("carrot", "vegetable", "cylinder", (0.020, 0.080), (0.95, 0.45, 0.05)),
    _o("tomato", "vegetable", "sphere", (0.040,), (0.85, 0.10, 0.10)),
    _o("cucumber", "vegetable", "cylinder", (0.025, 0.100), (0.20, 0.50, 0.15), "stripes"),
    _o("cardboard_box", "box", "box", (0.200, 0.150, 0.120), (0.65, 0.48, 0.30), "noise",
       grip="both", container=True),
    _o("plastic_bin", "box", "box", (0.220, 0.160, 0.130), (0.45, 0.55, 0.65), grip="both",
       container=True),
    _o("book", "item", "box", (0.100, 0.070, 0.020), (0.50, 0.15, 0.30), grip="top"),
    _o("vase", "item", "cylinder", (0.050, 0.100), (0.10, 0.55, 0.55), "noise"),
    _o("candle", "item", "cylinder", (0.035, 0.060), (0.95, 0.90, 0.75)),
    _o("watering_can", "can", "cylinder", (0.070, 0.100), (0.20, 0.60, 0.30), contents="water"),
    _o("plant_pot", "plant", "cylinder", (0.070, 0.070), (0.75, 0.40, 0.25), "noise"),
    _o("cactus", "plant", "cylinder", (0.050, 0.090), (0.30, 0.60, 0.30), "stripes"),
    _o("laundry_basket", "basket", "cylinder", (0.200, 0.140), (0.80, 0.70, 0.50), "checker",
       grip="both", container=True),
    _o("shirt", "garment", "box", (0.140, 0.100, 0.015), (0.30, 0.40, 0.80), "checker",
       grip="top"),
    _o("towel", "garment", "box", (0.160, 0.100, 0.020), (0.95, 0.80, 0.85), "stripes",
       grip="top"),
    _o("sock", "garment", "box", (0.060, 0.030, 0.010), (0.50, 0.50, 0.50), "noise", grip="top"),
)}

CATEGORIES: dict[str, tuple[str, ...]] = {}
for _spec in OBJECTS.values():
  CATEGORIES[_spec.category] = CATEGORIES.get(_spec.category, ()) + (_spec.name,)
del _spec

# Categories a session stocks several of (the activity goes round them one by one); the
# others get one variant per session.
POOL_SIZES = {"vessel": (2, 3), "dish": (2, 2), "vegetable": (2, 3), "item": (2, 3),
              "plant": (2, 2), "garment": (2, 3)}

# ----------------------------------------------------------------------------- places

STAND_OFF = 0.18  # m from a surface's front edge to where the wearer's pelvis stands
_WALL_FACING = {"north": math.pi / 2, "south": -math.pi / 2, "east": 0.0, "west": math.pi}


@dataclasses.dataclass(frozen=True)
class Station:
  """A workstation: a surface against a wall and the spot in front of it."""

  name: str  # the role activities refer to: counter, sink, stove, shelf, table, windowsill
  display: str  # what it is called in this place: "workbench", "bookshelf", ...
  facing: float  # yaw the wearer faces while working here (towards the wall)
  front: tuple[float, float]  # centre of the surface's front edge
  width: float  # along the edge
  depth: float
  top: float  # surface height
  slots: tuple[tuple[float, float], ...]  # where objects rest, in (lateral, depth) from `front`

  @property
  def forward(self) -> np.ndarray:
    return np.array([math.cos(self.facing), math.sin(self.facing)])

  @property
  def left(self) -> np.ndarray:
    return np.array([-math.sin(self.facing), math.cos(self.facing)])

  @property
  def stand(self) -> np.ndarray:
    """(2,) where the wearer's pelvis stands while working here."""
    return np.asarray(self.front) - STAND_OFF * self.forward

  def surface_xy(self, lateral: float, depth: float) -> np.ndarray:
    return np.asarray(self.front) + depth * self.forward + lateral * self.left


@dataclasses.dataclass(frozen=True)
class Place:
  """A room with furniture, workstations and its static solids."""

  name: str
  display: str
  size: tuple[float, float, float]  # x extent, y extent, ceiling height
  stations: dict[str, Station]
  static: tuple[Primitive, ...]
  static_poses: np.ndarray  # (S, 4, 4) T_world_solid
  footprints: tuple[tuple[float, float, float, float, float], ...]  # (cx, cy, hx, hy, yaw)


def _pose(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
  return geometry.make_se3(geometry.axis_angle_to_matrix(np.array([0.0, 0.0, yaw])),
                           np.array([x, y, z]))


def _jitter(rng: np.random.Generator, color, amount: float = 0.06) -> tuple[float, float, float]:
  return tuple(float(c) for c in np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3),
                                         0.02, 0.98))


# Furniture per place: (station, display, wall, offset along the wall, width, depth, height).
_LAYOUTS = {
    "kitchen": dict(
        display="kitchen", size=(5.0, 4.2, 2.6),
        stations=(("counter", "counter", "north", -1.1, 1.3, 0.6, 0.90),
                  ("sink", "sink", "north", 0.6, 0.9, 0.6, 0.90),
                  ("stove", "stove", "east", 0.7, 0.8, 0.6, 0.90),
                  ("shelf", "shelf", "west", 0.3, 1.0, 0.42, 1.00),
                  ("table", "table", "south", 0.8, 1.2, 0.8, 0.75),
                  ("windowsill", "windowsill", "west", -1.2, 0.9, 0.35, 0.95)),
        decor=(("fridge", "east", -1.2, 0.7, 0.65, 1.80, (0.92, 0.92, 0.94), "plain"),),
        floor=((0.55, 0.45, 0.35), "checker"), walls=((0.85, 0.82, 0.72), "stripes")),
    "living_room": dict(
        display="living room", size=(5.5, 4.5, 2.7),
        stations=(("counter", "dresser", "north", -1.2, 1.2, 0.5, 0.85),
                  ("shelf", "bookshelf", "north", 1.1, 1.0, 0.4, 1.00),
                  ("table", "desk", "west", -0.6, 1.2, 0.7, 0.75),
                  ("windowsill", "windowsill", "south", 0.6, 1.2, 0.3, 0.90)),
        decor=(("sofa", "east", 0.0, 1.8, 0.8, 0.45, (0.35, 0.30, 0.55), "noise"),),
        floor=((0.45, 0.30, 0.22), "stripes"), walls=((0.70, 0.78, 0.72), "noise")),
    "workshop": dict(
        display="workshop", size=(6.0, 4.6, 3.0),
        stations=(("counter", "workbench", "north", -1.0, 1.6, 0.7, 0.92),
                  ("sink", "utility sink", "east", 1.0, 0.7, 0.55, 0.90),
                  ("shelf", "tool shelf", "west", 0.0, 1.2, 0.45, 1.05),
                  ("table", "assembly table", "south", 0.6, 1.4, 0.8, 0.80)),
        decor=(("cabinet", "north", 1.6, 0.8, 0.5, 1.20, (0.40, 0.42, 0.45), "stripes"),
               ("crates", "south", -1.9, 0.8, 0.6, 0.60, (0.60, 0.45, 0.25), "noise")),
        floor=((0.50, 0.50, 0.50), "noise"), walls=((0.75, 0.72, 0.65), "checker")),
}


def _wall_frame(wall: str, offset: float, depth: float, room: tuple[float, float, float]):
  """Centre of the front edge and the facing yaw of furniture `depth` deep on `wall`."""
  hx, hy = room[0] / 2, room[1] / 2
  facing = _WALL_FACING[wall]
  if wall in ("north", "south"):
    wall_y = hy if wall == "north" else -hy
    front = (offset, wall_y - math.sin(facing) * depth)
  else:
    wall_x = hx if wall == "east" else -hx
    front = (wall_x - math.cos(facing) * depth, offset)
  return front, facing


def _slots(width: float, depth: float) -> tuple[tuple[float, float], ...]:
  """Rest positions (lateral, depth), nearest to the wearer first: a front row within
  reach and, where the surface is deep enough, a back row."""
  half = min(0.30, width / 2 - 0.10)
  front = [(float(l), 0.15) for l in np.arange(-half, half + 1e-6, 0.15)]
  back = [(float(l), 0.31) for l in (-0.2, 0.0, 0.2) if abs(l) <= half] if depth >= 0.42 else []
  return tuple(sorted(front + back, key=lambda s: abs(s[0]) + s[1]))


def _furniture(name: str, station: Station, color, rng) -> list:
  """Static solids of one station: a body and its top, plus what marks its kind."""
  f, l = station.forward, station.left
  depth = station.depth
  c = np.asarray(station.front) + f * depth / 2
  h = station.top
  yaw = station.facing
  top_color = _jitter(rng, (0.80, 0.78, 0.74))
  out = []
  if name == "table":
    out.append((Primitive(f"{name}_top", "box", (depth / 2, station.width / 2, 0.025),
                          top_color, "noise", 0.12), _pose(*c, h - 0.025, yaw)))
    for side in (-1, 1):  # two leg panels, so the floor under the table stays visible
      leg = c + side * l * (station.width / 2 - 0.06)
      out.append((Primitive(f"{name}_leg{side + 1}", "box", (depth / 2 - 0.05, 0.03,
                                                             (h - 0.05) / 2), color, "plain"),
                  _pose(*leg, (h - 0.05) / 2, yaw)))
    return out
  out.append((Primitive(f"{name}_body", "box", (depth / 2, station.width / 2, (h - 0.03) / 2),
                        color, "stripes", 0.15), _pose(*c, (h - 0.03) / 2, yaw)))
  out.append((Primitive(f"{name}_top", "box", (depth / 2 + 0.02, station.width / 2 + 0.02,
                                               0.015), top_color, "noise", 0.10),
              _pose(*c, h - 0.015, yaw)))
  if name == "sink":
    basin = c + f * 0.05
    out.append((Primitive("sink_basin", "box", (0.18, min(0.25, station.width / 2 - 0.1), 0.004),
                          (0.30, 0.32, 0.35), "plain"), _pose(*basin, h + 0.004, yaw)))
  elif name == "stove":
    for side in (-1, 1):
      burner = c + f * 0.08 + side * l * 0.18
      out.append((Primitive(f"stove_burner{side + 1}", "cylinder", (0.09, 0.004),
                            (0.05, 0.05, 0.05), "plain"), _pose(*burner, h + 0.004)))
  elif name == "shelf":
    back = c + f * (depth / 2 - 0.02)
    out.append((Primitive("shelf_back", "box", (0.02, station.width / 2, 0.45), color, "stripes",
                          0.15), _pose(*back, h + 0.45, yaw)))
    for k, dz in enumerate((0.42, 0.84)):
      out.append((Primitive(f"shelf_board{k}", "box", (depth / 2, station.width / 2, 0.015),
                            color, "stripes", 0.15), _pose(*c, h + dz, yaw)))
  elif name == "windowsill":
    pane = c + f * (depth / 2 - 0.01)
    out.append((Primitive("window", "box", (0.01, station.width / 2, 0.45), (0.80, 0.90, 0.98),
                          "plain"), _pose(*pane, h + 0.55, yaw)))
  return out


def _make_place(name: str, rng: np.random.Generator) -> Place:
  spec = _LAYOUTS[name]
  room = spec["size"]
  hx, hy, hz = room[0] / 2, room[1] / 2, room[2]
  floor_color, floor_tex = spec["floor"]
  wall_color, wall_tex = spec["walls"]
  solids = [
      (Primitive("floor", "box", (hx, hy, 0.02), _jitter(rng, floor_color), floor_tex, 0.5),
       _pose(0, 0, -0.02)),
      (Primitive("ceiling", "box", (hx, hy, 0.02), (0.92, 0.92, 0.90), "plain"),
       _pose(0, 0, hz + 0.02)),
  ]
  wall_c = _jitter(rng, wall_color)
  for wall, (x, y, ex, ey) in {"north": (0, hy, hx, 0.03), "south": (0, -hy, hx, 0.03),
                               "east": (hx, 0, 0.03, hy), "west": (-hx, 0, 0.03, hy)}.items():
    solids.append((Primitive(f"wall_{wall}", "box", (ex + 0.03, ey + 0.03, hz / 2), wall_c,
                             wall_tex, 0.35), _pose(x + np.sign(x) * 0.03, y + np.sign(y) * 0.03,
                                                    hz / 2)))
  stations, footprints = {}, []
  for st_name, display, wall, offset, width, depth, height in spec["stations"]:
    offset += float(rng.uniform(-0.12, 0.12))
    front, facing = _wall_frame(wall, offset, depth, room)
    st = Station(st_name, display, facing, front, width, depth, height, _slots(width, depth))
    stations[st_name] = st
    color = _jitter(rng, {"table": (0.55, 0.38, 0.22), "windowsill": (0.90, 0.90, 0.88)}.get(
        st_name, (0.60, 0.50, 0.40)))
    solids += _furniture(st_name, st, color, rng)
    c = np.asarray(front) + st.forward * depth / 2
    footprints.append((float(c[0]), float(c[1]), depth / 2, width / 2, facing))
  for d_name, wall, offset, width, depth, height, color, tex in spec["decor"]:
    front, facing = _wall_frame(wall, offset, depth, room)
    c = np.asarray(front) + np.array([math.cos(facing), math.sin(facing)]) * depth / 2
    solids.append((Primitive(d_name, "box", (depth / 2, width / 2, height / 2),
                             _jitter(rng, color), tex, 0.2), _pose(*c, height / 2, facing)))
    footprints.append((float(c[0]), float(c[1]), depth / 2, width / 2, facing))
  prims, poses = zip(*solids)
  return Place(name, spec["display"], room, stations, tuple(prims), np.stack(poses),
               tuple(footprints))


def path_clearance(place: Place, a: np.ndarray, b: np.ndarray) -> float:
  """Smallest distance (m) from the straight walk a -> b to any furniture footprint, away
  from its ends (which stand next to their own station by construction)."""
  length = float(np.linalg.norm(b - a))
  ts = np.linspace(0.0, 1.0, 60)
  ts = ts[(ts * length > 0.3) & ((1 - ts) * length > 0.3)][:, None]
  if not ts.size:
    return np.inf
  pts = a[None] * (1 - ts) + b[None] * ts  # (T, 2)
  best = np.inf
  for cx, cy, hx, hy, yaw in place.footprints:
    c, s = math.cos(yaw), math.sin(yaw)
    d = pts - np.array([cx, cy])
    local = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], -1)
    out = np.maximum(np.abs(local) - np.array([hx, hy]), 0.0)
    best = min(best, float(np.linalg.norm(out, axis=-1).min()))
  return best


# ----------------------------------------------------------------------------- activities


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """One step of a subtask, on object categories (the session picks the objects)."""

  action: str
  obj: str | None = None  # category acted on or held
  target: str | None = None  # category poured into, stirred, cut, placed on, or SURFACE
  hand: str = "main"  # main (dominant), off, or both
  p: float = 1.0  # probability the step happens
  repeat: tuple[int, int] = (1, 1)  # consecutive bouts, inclusive range


@dataclasses.dataclass(frozen=True)
class Subtask:
  name: str  # the "Sub Task" phrase
  station: str  # where the subtask's work happens
  steps: tuple[StepSpec, ...]
  p: float = 1.0  # probability the subtask happens


@dataclasses.dataclass(frozen=True)
class Activity:
  """A main task: setup, then the body once per object of `pool`, then finish."""

  name: str
  task: str  # the "Main Task" sentence; {category} fields name the session's objects
  places: tuple[str, ...]
  homes: dict[str, str]  # category -> station where its objects start, or "@category" (inside)
  setup: tuple[Subtask, ...]
  body: tuple[Subtask, ...] = ()
  finish: tuple[Subtask, ...] = ()
  pool: str | None = None

  @property
  def categories(self) -> tuple[str, ...]:
    return tuple(self.homes)

  @property
  def subtasks(self) -> tuple[Subtask, ...]:
    return self.setup + self.body + self.finish


def _s(action, obj=None, target=None, hand="main", p=1.0, repeat=(1, 1)) -> StepSpec:
  return StepSpec(action, obj, target, hand, p, repeat)


def _sub(name, station, *steps, p=1.0) -> Subtask:
  return Subtask(name, station, tuple(steps), p)


_GET = lambda c, hand="main": (_s("reach", c, hand=hand), _s("grasp", c, hand=hand),
                               _s("lift", c, hand=hand))

ACTIVITIES: dict[str, Activity] = {a.name: a for a in (
    Activity(
        "make_tea", "Making a cup of tea: boiling water in the {heater}, adding tea from the "
        "{tea} to the {vessel} and stirring it with the {spoon}.", ("kitchen",),
        dict(heater="stove", vessel="shelf", tea="counter", spoon="counter"),
        setup=(_sub("Fill with water", "sink", *_GET("heater"), _s("open", "heater", hand="off"),
                    _s("close", "heater", hand="off")),
               _sub("Heat the water", "stove", _s("place", "heater"), _s("push", "heater"))),
        body=(_sub("Get a cup", "counter", *_GET("vessel"), _s("place", "vessel")),
              _sub("Add the tea", "counter", *_GET("tea"), _s("open", "tea", hand="off"),
                   _s("pour", "tea", "vessel"), _s("close", "tea", hand="off", p=0.7),
                   _s("place", "tea")),
              _sub("Pour the hot water", "counter", *_GET("heater"), _s("pour", "heater", "vessel"),
                   _s("place", "heater")),
              _sub("Stir the drink", "counter", *_GET("spoon")[:2],
                   _s("stir", "spoon", "vessel", repeat=(1, 2)), _s("place", "spoon"))),
        finish=(_sub("Put the tea away", "shelf", *_GET("tea"), _s("place", "tea")),),
        pool="vessel"),
    Activity(
        "make_coffee", "Making coffee: heating water in the {heater}, spooning coffee from the "
        "{coffee} into the {vessel}, adding {milk} and stirring.", ("kitchen",),
        dict(heater="stove", coffee="counter", vessel="shelf", milk="counter", spoon="counter"),
        setup=(_sub("Heat the water", "stove", _s("reach", "heater"), _s("push", "heater")),),
        body=(_sub("Get a cup", "counter", *_GET("vessel"), _s("place", "vessel")),
              _sub("Add the coffee", "counter", *_GET("coffee"), _s("open", "coffee", hand="off"),
                   _s("pour", "coffee", "vessel"), _s("close", "coffee", hand="off"),
                   _s("place", "coffee")),
              _sub("Pour the hot water", "counter", *_GET("heater"), _s("pour", "heater", "vessel"),
                   _s("place", "heater")),
              _sub("Add milk", "counter", *_GET("milk"), _s("pour", "milk", "vessel"),
                   _s("place", "milk"), p=0.6),
              _sub("Stir the drink", "counter", *_GET("spoon")[:2],
                   _s("stir", "spoon", "vessel", repeat=(1, 2)), _s("place", "spoon"))),
        finish=(_sub("Put the coffee away", "shelf", *_GET("coffee"), _s("place", "coffee")),),
        pool="vessel"),
    Activity(
        "wash_dishes", "Washing the dishes: carrying each dish from the table to the sink, "
        "scrubbing it with the {cloth} and putting it on the shelf.", ("kitchen",),
        dict(dish="table", cloth="sink"),
        setup=(),
        body=(_sub("Collect a dish", "table", *_GET("dish", "off")),
              _sub("Scrub the dish", "sink", *_GET("cloth")[:2],
                   _s("wipe", "cloth", "dish", repeat=(1, 2)), _s("place", "cloth")),
              _sub("Put the dish away", "shelf", _s("place", "dish", hand="off"))),
        finish=(_sub("Wipe the sink", "sink", *_GET("cloth")[:2], _s("wipe", "cloth", SURFACE),
                     _s("place", "cloth"), p=0.5),),
        pool="dish"),
    Activity(
        "clean_table", "Cleaning the {table}: moving each item aside and wiping the surface "
        "with the {cloth}.", ("kitchen", "living_room", "workshop"),
        dict(cloth="counter", item="table"),
        setup=(_sub("Get a cloth", "counter", *_GET("cloth")),),
        body=(_sub("Move an item aside", "table", _s("push", "item", hand="off")),
              _sub("Wipe the table", "table", _s("wipe", "cloth", SURFACE, repeat=(1, 2)))),
        finish=(_sub("Put the cloth back", "counter", _s("place", "cloth")),),
        pool="item"),
    Activity(
        "pack_box", "Packing items from the {shelf} into the {box} on the {table} and closing "
        "it.", ("living_room", "workshop"),
        dict(box="table", item="shelf"),
        setup=(_sub("Open the box", "table", _s("reach", "box"), _s("open", "box", hand="both")),),
        body=(_sub("Pick up an item", "shelf", *_GET("item")),
              _sub("Put the item in the box", "table", _s("place", "item", "box"))),
        finish=(_sub("Close the box", "table", _s("close", "box", hand="both"),
                     _s("push", "box", p=0.5)),),
        pool="item"),
    Activity(
        "water_plants", "Watering the plants on the {windowsill} with the {can}.",
        ("kitchen", "living_room"),
        dict(can="counter", plant="windowsill"),
        setup=(_sub("Get the watering can", "counter", *_GET("can")),),
        body=(_sub("Water a plant", "windowsill", _s("pour", "can", "plant")),
              _sub("Turn the plant", "windowsill", _s("push", "plant", hand="off"), p=0.4)),
        finish=(_sub("Put the can back", "counter", _s("place", "can")),),
        pool="plant"),
    Activity(
        "prepare_cereal", "Preparing a bowl of cereal: pouring cereal from the {cereal} into the "
        "{bowl}, adding {milk} and stirring with the {spoon}.", ("kitchen",),
        dict(bowl="shelf", cereal="shelf", milk="counter", spoon="counter"),
        setup=(_sub("Get a bowl", "table", *_GET("bowl"), _s("place", "bowl")),
               _sub("Pour the cereal", "table", *_GET("cereal"), _s("open", "cereal", hand="off",
                                                                     p=0.5),
                    _s("pour", "cereal", "bowl"), _s("place", "cereal")),
               _sub("Add milk", "table", *_GET("milk"), _s("pour", "milk", "bowl"),
                    _s("place", "milk")),
               _sub("Stir the cereal", "table", *_GET("spoon")[:2], _s("stir", "spoon", "bowl"),
                    _s("place", "spoon"))),
        finish=(_sub("Put the cereal away", "shelf", *_GET("cereal"), _s("place", "cereal")),)),
    Activity(
        "tidy_shelf", "Tidying up: carrying the items from the {table} to the {shelf} and "
        "straightening them.", ("kitchen", "living_room", "workshop"),
        dict(item="table"),
        setup=(),
        body=(_sub("Pick up an item", "table", *_GET("item")),
              _sub("Put the item on the shelf", "shelf", _s("place", "item"),
                   _s("push", "item", p=0.5))),
        finish=(_sub("Look over the shelf", "shelf", _s("look")),),
        pool="item"),
    Activity(
        "cut_vegetables", "Cutting vegetables on the {board} with the {knife} and collecting the "
        "pieces in the {bowl}.", ("kitchen",),
        dict(board="counter", knife="counter", vegetable="table", bowl="shelf"),
        setup=(_sub("Set up the board", "counter", _s("reach", "board"), _s("push", "board")),
               _sub("Get a bowl", "counter", *_GET("bowl"), _s("place", "bowl"))),
        body=(_sub("Get a vegetable", "counter", *_GET("vegetable"),
                   _s("place", "vegetable", "board")),
              _sub("Cut the vegetable", "counter", *_GET("knife"),
                   _s("cut", "knife", "vegetable", hand="both", repeat=(1, 3)),
                   _s("place", "knife")),
              _sub("Put the pieces in the bowl", "counter", *_GET("vegetable"),
                   _s("place", "vegetable", "bowl"))),
        finish=(_sub("Clear the board", "counter", _s("reach", "board"), _s("push", "board")),),
        pool="vegetable"),
    Activity(
        "sort_laundry", "Sorting laundry: taking each garment out of the {basket}, folding it on "
        "the {counter} and putting the basket away.", ("living_room", "workshop"),
        dict(basket="table", garment="@basket"),
        setup=(),
        body=(_sub("Take out a garment", "table", *_GET("garment")),
              _sub("Fold the garment", "counter", _s("place", "garment"), _s("push", "garment"))),
        finish=(_sub("Put the basket away", "shelf", _s("reach", "basket", hand="both"),
                     _s("grasp", "basket", hand="both"), _s("lift", "basket", hand="both"),
                     _s("place", "basket", hand="both")),),
        pool="garment"),
)}


@dataclasses.dataclass(frozen=True)
class World:
  seed: int
  places: dict[str, Place]
  objects: dict[str, ObjectSpec]
  activities: dict[str, Activity]


def make_world(seed: int) -> World:
  """The fixed vocabularies and the seed's rooms (station offsets and colours vary)."""
  rng = np.random.default_rng([seed, 0x3021D])
  places = {name: _make_place(name, rng) for name in _LAYOUTS}
  for act in ACTIVITIES.values():
    for pname in act.places:
      missing = {sub.station for sub in act.subtasks} | {
          h for h in act.homes.values() if not h.startswith("@")}
      missing -= set(places[pname].stations)
      if missing:
        raise ValueError(f"activity {act.name} needs stations {sorted(missing)} in {pname}")
  return World(seed, places, dict(OBJECTS), dict(ACTIVITIES))


# ----------------------------------------------------------------------------- sessions


@dataclasses.dataclass(frozen=True)
class Wearer:
  body_height: float  # m
  handedness: str  # "right" or "left": the main hand
  walk_speed: float  # m/s cruising
  body_betas: tuple[float, ...]  # (16,) SMPL-H shape
  hand_betas: tuple[float, ...]  # (10,) MANO shape, shared by both hands

  @property
  def main_hand(self) -> str:
    return self.handedness

  @property
  def off_hand(self) -> str:
    return "left" if self.handedness == "right" else "right"


@dataclasses.dataclass(frozen=True)
class EpisodePlan:
  index: int
  activity: str
  start_station: str  # where the wearer stands when recording starts


@dataclasses.dataclass(frozen=True)
class SessionPlan:
  """One wearer in one place: the activities, objects and episodes of a session."""

  session_id: str  # uuid-like hex, the session folder name
  place: str
  wearer: Wearer
  activities: tuple[str, ...]
  variants: dict[str, tuple[str, ...]]  # category -> this session's objects of it
  distractors: tuple[str, ...]  # objects lying around that no activity uses
  episodes: tuple[EpisodePlan, ...]

  def objects_for(self, activity: Activity) -> tuple[str, ...]:
    """The movable objects of an episode of `activity`: its categories, then distractors."""
    names = [n for cat in activity.categories for n in self.variants[cat]]
    return tuple(names) + tuple(d for d in self.distractors if d not in names)


def _wearer(rng: np.random.Generator) -> Wearer:
  height = float(np.clip(rng.normal(1.72, 0.08), 1.55, 1.92))
  betas = rng.normal(0.0, 0.6, 16)
  # SMPL's first shape component is mostly stature; tie it to the height (sign assumed).
  betas[0] = (height - 1.72) / 0.08
  hand = rng.normal(0.0, 0.5, 10)
  hand[0] = betas[0] * 0.5
  return Wearer(round(height, 3), "right" if rng.random() < 0.85 else "left",
                round(float(1.2 * (height / 1.75) ** 0.5 + rng.normal(0, 0.05)), 3),
                tuple(float(b) for b in betas), tuple(float(b) for b in hand))


def plan_sessions(world: World, num_sessions: int, episodes_per_session: int,
                  seed: int) -> list[SessionPlan]:
  """Sessions that share place and wearer across their episodes and differ from each other.

  Places and activities are balanced greedily (the least used so far win, ties broken at
  random) so every activity recurs across sessions; object variants are drawn per session.
  """
  rng = np.random.default_rng([seed, 0x5E55])
  use = {a: 0 for a in world.activities}
  place_use = {p: 0 for p in world.places}
  fits = {p: [a for a, act in world.activities.items() if p in act.places]
          for p in world.places}

  def want(place: str) -> float:  # a place whose activities are used least, then used least
    return -min(use[a] for a in fits[place]) - 0.1 * place_use[place] + rng.uniform(0, 0.05)

  sessions = []
  for _ in range(num_sessions):
    place = max(world.places, key=want)
    place_use[place] += 1
    k = int(rng.integers(2, 4))
    acts = tuple(sorted(fits[place], key=lambda a: (use[a], rng.random()))[:k])
    for a in acts:
      use[a] += 1
    variants = {}
    for cat, names in CATEGORIES.items():
      lo, hi = POOL_SIZES.get(cat, (1, 1))
      n = int(rng.integers(lo, min(hi, len(names)) + 1))
      variants[cat] = tuple(str(x) for x in rng.choice(names, n, replace=False))
    used = {c for a in acts for c in world.activities[a].categories}
    spare = [variants[c][0] for c in CATEGORIES if c not in used]
    distractors = tuple(str(x) for x in rng.choice(spare, min(3, len(spare)), replace=False))
    stations = sorted(world.places[place].stations)
    order = [acts[i] for i in rng.permutation(len(acts))]
    episodes = tuple(EpisodePlan(e, order[e % len(order)], str(rng.choice(stations)))
                     for e in range(episodes_per_session))
    sessions.append(SessionPlan(str(uuid.UUID(bytes=rng.bytes(16), version=4)), place,
                                _wearer(rng), acts, variants, distractors, episodes))
  return sessions

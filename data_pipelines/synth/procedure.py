"""Expands an activity into the timed steps of one episode.

The activity's procedure (world.Activity) is walked in order, with the session's objects
in place of categories, optional steps drawn, repeated bouts expanded and a duration drawn
per step. The wearer walks (turning first and after, when the heading changes much) to
wherever the next step's object lies, and now and then looks around. Where the procedure
ends before the episode does, the activity starts over (a new round, the pool objects in
a new order), so every frame of the episode belongs to exactly one step; the recording may
stop in the middle of the last step.

A light world state is kept along the way: where every free object rests and which hand
holds what. It decides where the wearer must go, which hand acts, and where placed and
pushed objects end up, so that motion.py only has to move bodies between known poses.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from data_pipelines.synth import world as world_lib
from data_pipelines.synth.scene import Step
from xefm_jax.data import geometry

FPS = 20.0
DURATIONS = {  # seconds per bout, drawn uniformly
    "reach": (0.6, 1.2), "grasp": (0.4, 0.8), "lift": (0.5, 1.0), "place": (0.7, 1.3),
    "pour": (2.0, 4.0), "stir": (2.0, 5.0), "cut": (1.5, 3.0), "wipe": (2.5, 5.0),
    "open": (1.0, 1.8), "close": (0.8, 1.4), "push": (1.0, 1.8), "look": (1.5, 3.0)}
WALK_RAMP_S = 0.5  # speeding up plus slowing down cost this much over cruising all the way
TURN_RATE = 2.5  # rad/s while turning in place
MIN_TURN = math.radians(45)  # smaller heading changes are absorbed into the walk
P_LOOK = 0.12  # chance of looking around before a subtask
PRESENT_AT = (0.33, 0.22)  # m ahead of the pelvis, above the surface: a held object at work
HELD_ACTIONS = ("lift", "place", "pour", "stir", "cut", "wipe")  # act on the object in hand


@dataclasses.dataclass(frozen=True)
class PlannedStep:
  """A Step plus what motion.py needs to perform it."""

  step: Step
  end_planned: int  # frame where the step would end if the recording went on (>= step.end)
  station: str  # where the wearer stands during the step (a walk's destination)
  root_from: tuple[float, float, float]  # pelvis x, y (on the floor) and yaw at the start
  root_to: tuple[float, float, float]  # the same at the end: differs for walk and turn only
  acting: str | None  # the hand doing the action: "left", "right" or None (locomotion)
  assist: str | None  # the other hand: "support" (steadies or presents the object worked
  #                     on), "follow" (second grip of a big object), "mirror" (same motion
  #                     on the other side) or None (idle or carrying)
  target: str | None  # object the held tool acts on, is poured into, or is placed on
  on_surface: bool  # the target is the station's surface (wipe)
  focus: tuple[float, float, float] | None  # where the eyes go (world)
  dest: tuple[float, float, float, float] | None  # x, y, z, yaw where `obj` comes to rest
  held: tuple[str | None, str | None]  # objects in the (left, right) hand at the start


@dataclasses.dataclass(frozen=True)
class Script:
  """The planned episode: its objects and its steps covering frames [0, num_frames)."""

  activity: str
  task_text: str
  main_hand: str
  objects: tuple[str, ...]  # the K movable objects, in the order of EpisodeSim.objects
  initial_poses: np.ndarray  # (K, 4, 4) T_world_object at frame 0
  steps: tuple[PlannedStep, ...]
  num_frames: int


def _wrap(a: float) -> float:
  return (a + math.pi) % (2 * math.pi) - math.pi


def object_pose(x: float, y: float, z: float, yaw: float) -> np.ndarray:
  return geometry.make_se3(geometry.axis_angle_to_matrix(np.array([0.0, 0.0, yaw])),
                           np.array([x, y, z]))


class _Planner:
  """Walks an activity's procedure, keeping the world state and emitting steps."""

  def __init__(self, world: world_lib.World, session: world_lib.SessionPlan,
               episode: world_lib.EpisodePlan, num_frames: int, rng: np.random.Generator):
    self.world, self.session, self.rng = world, session, rng
    self.place = world.places[session.place]
    self.activity = world.activities[episode.activity]
    self.main, self.off = session.wearer.main_hand, session.wearer.off_hand
    self.speed = session.wearer.walk_speed
    self.num_frames = num_frames
    self.frame = 0
    self.steps: list[PlannedStep] = []
    st = self.place.stations[episode.start_station]
    self.station = st.name
    self.root = (float(st.stand[0]), float(st.stand[1]), st.facing)
    self.objects = session.objects_for(self.activity)
    self.pose: dict[str, np.ndarray] = {}  # free objects: (x, y, z, yaw) of the centre
    self.where: dict[str, str] = {}  # free objects: station they rest at
    self.hands: dict[str, str | None] = {"left": None, "right": None}
    self.grasp_yaw: dict[str, float] = {}  # object yaw minus root yaw when grasped
    self._lifted: dict[str, np.ndarray] = {}  # where each held object was picked up
    self._place_initial()

  # --------------------------------------------------------------------------- state

  def spec(self, name: str) -> world_lib.ObjectSpec:
    return self.world.objects[name]

  def holder(self, name: str) -> str | None:
    holders = [h for h in (self.main, self.off) if self.hands[h] == name]
    return holders[0] if holders else None

  def _slot_free(self, st: world_lib.Station, xy: np.ndarray, clearance: float) -> bool:
    return all(np.linalg.norm(p[:2] - xy) >= clearance + self.spec(n).radius * 0.5
               for n, p in self.pose.items() if self.where.get(n) == st.name)

  def _big_xy(self, st: world_lib.Station, name: str) -> np.ndarray:
    o = self.spec(name)
    reach_depth = o.size[0] if o.kind == "box" else o.radius
    return st.surface_xy(0.0, min(reach_depth + 0.03, st.depth - reach_depth - 0.02))

  def _free_slot(self, st: world_lib.Station, name: str, prefer: float = 0.0) -> np.ndarray:
    """A free rest position at a station for `name`, nearest to lateral `prefer`; on a
    crowded surface, the least crowded spot within reach."""
    if self.spec(name).grip == "both":
      xy = self._big_xy(st, name)
      if self._slot_free(st, xy, 0.15):
        return xy
    order = sorted(st.slots, key=lambda s: abs(s[0] - prefer) + s[1])
    for lateral, depth in order:
      xy = st.surface_xy(lateral, depth)
      if self._slot_free(st, xy, 0.10):
        return xy
    others = [p[:2] for n, p in self.pose.items() if self.where.get(n) == st.name]
    half = st.width / 2 - 0.08
    grid = [st.surface_xy(l, d) for l in np.linspace(-min(half, 0.35), min(half, 0.35), 8)
            for d in np.linspace(0.1, min(0.35, st.depth - 0.08), 4)]
    return max(grid, key=lambda xy: min(np.linalg.norm(xy - o) for o in others))

  def _rest_yaw(self, name: str, st: world_lib.Station) -> float:
    o = self.spec(name)
    if o.kind == "box":  # boxes and tools lie square to the wearer, long side away
      return st.facing + float(self.rng.uniform(-0.2, 0.2))
    return float(self.rng.uniform(-math.pi, math.pi))

  def _put(self, name: str, st: world_lib.Station, xy: np.ndarray, z: float, yaw: float):
    self.pose[name] = np.array([xy[0], xy[1], z, yaw])
    self.where[name] = st.name

  def _place_initial(self):
    """Objects start at their activity's homes (or inside their container); distractors on
    a random station."""
    homes = self.activity.homes
    inside = [c for c in homes if homes[c].startswith("@")]
    for cat in [c for c in homes if c not in inside]:
      st = self.place.stations[homes[cat]]
      for name in self.session.variants[cat]:
        xy = self._free_slot(st, name, prefer=float(self.rng.uniform(-0.3, 0.3)))
        self._put(name, st, xy, st.top + self.spec(name).half_height, self._rest_yaw(name, st))
    for cat in inside:
      box = self.session.variants[homes[cat][1:]][0]
      bx, by, bz, _ = self.pose[box]
      bottom = bz - self.spec(box).half_height
      for i, name in enumerate(self.session.variants[cat]):
        off = self.rng.uniform(-0.05, 0.05, 2)
        self._put(name, self.place.stations[self.where[box]], np.array([bx, by]) + off,
                  bottom + 0.01 + 0.02 * i + self.spec(name).half_height,
                  float(self.rng.uniform(-math.pi, math.pi)))
    stations = sorted(self.place.stations)
    for name in self.objects:
      if name not in self.pose:
        st = self.place.stations[stations[int(self.rng.integers(len(stations)))]]
        xy = self._free_slot(st, name, prefer=float(self.rng.uniform(-0.3, 0.3)))
        self._put(name, st, xy, st.top + self.spec(name).half_height, self._rest_yaw(name, st))

  # --------------------------------------------------------------------------- emitting

  @property
  def full(self) -> bool:
    return self.frame >= self.num_frames

  def _emit(self, subtask: str, action: str, obj: str | None, seconds: float, *,
            hand: str, label: str, description: str, acting: str | None = None,
            assist: str | None = None, root_to=None, target: str | None = None,
            on_surface: bool = False, focus=None, dest=None):
    n = max(3, int(round(seconds * FPS)))
    start = self.frame
    end = min(start + n, self.num_frames)
    root_to = self.root if root_to is None else root_to
    self.steps.append(PlannedStep(
        Step(subtask, action, obj, start, end, hand, label, description), start + n,
        self.station, self.root, tuple(float(v) for v in root_to), acting, assist, target,
        on_surface, None if focus is None else tuple(float(v) for v in focus),
        None if dest is None else tuple(float(v) for v in dest),
        (self.hands["left"], self.hands["right"])))
    self.frame = end
    self.root = tuple(float(v) for v in root_to)

  def _held_phrase(self) -> str:
    held = sorted({h for h in self.hands.values() if h})
    return (" carrying the " + " and the ".join(self.spec(h).display for h in held)) if held else ""

  def look(self, subtask: str):
    self._emit(subtask, "look", None, self.rng.uniform(*DURATIONS["look"]), hand="none",
               label="Look around", description=f"Look around the {self.place.display}.")

  def move_to(self, subtask: str, station: str):
    """Turn, walk and turn so that the wearer stands at `station`, facing it."""
    if station == self.station or self.full:
      return
    st = self.place.stations[station]
    a, b = np.array(self.root[:2]), st.stand
    x, y, yaw = self.root
    dist = float(np.linalg.norm(b - a))
    heading = math.atan2(b[1] - a[1], b[0] - a[0])
    turn1 = _wrap(heading - yaw)
    where = f"Turn toward the {st.display}."
    if abs(turn1) > MIN_TURN:
      self._emit(subtask, "turn", None, 0.3 + abs(turn1) / TURN_RATE, hand="none",
                 label=f"Turn to {st.display}", description=where, root_to=(x, y, yaw + turn1))
      yaw += turn1
    turn2 = _wrap(st.facing - yaw)
    # Heading changes below MIN_TURN happen while walking; larger ones as their own turn.
    walk_yaw = yaw + (turn2 if abs(turn2) <= MIN_TURN else 0.0)
    self.station = station
    if not self.full:
      self._emit(subtask, "walk", None, dist / self.speed + WALK_RAMP_S, hand="none",
                 label=f"Walk to {st.display}",
                 description=f"Walk to the {st.display}{self._held_phrase()}.",
                 root_to=(float(b[0]), float(b[1]), walk_yaw))
    turn2 = _wrap(st.facing - walk_yaw)
    if abs(turn2) > 1e-6 and not self.full:
      self._emit(subtask, "turn", None, 0.3 + abs(turn2) / TURN_RATE, hand="none",
                 label=f"Turn to {st.display}", description=where,
                 root_to=(float(b[0]), float(b[1]), walk_yaw + turn2))

  # --------------------------------------------------------------------------- one step

  def _present_point(self) -> np.ndarray:
    st = self.place.stations[self.station]
    x, y, yaw = self.root
    ahead, up = PRESENT_AT
    return np.array([x + ahead * math.cos(yaw), y + ahead * math.sin(yaw), st.top + up])

  def _hand_for(self, spec: world_lib.StepSpec, obj: str,
                target: str | None) -> tuple[str, str | None]:
    """(acting hand, what the other hand does) for a step on `obj`."""
    other = lambda h: "left" if h == "right" else "right"
    free = lambda h: self.hands[h] is None
    holder = self.holder(obj)
    if spec.hand == "both":
      if spec.action == "cut":  # the tool hand cuts, the other steadies the target
        if holder is None or not free(other(holder)):
          raise ValueError(f"cut with {obj}: needs it in one hand and the other hand free")
        return holder, "support"
      if spec.action in ("reach", "grasp", "open", "close"):
        if not (free("left") and free("right")):
          raise ValueError(f"{spec.action} {obj} with both hands, but a hand is full")
        return self.main, ("mirror" if spec.action in ("open", "close") else "follow")
      if holder is None:
        raise ValueError(f"{spec.action} {obj}: it is not in a hand")
      return holder, "follow"
    if spec.action in HELD_ACTIONS:
      if holder is None:
        raise ValueError(f"{spec.action} {obj}: it is not in a hand")
      presents = target is not None and self.hands[other(holder)] == target
      return holder, ("support" if presents else None)
    if holder is not None:  # open, close or push an object held by the other hand
      if not free(other(holder)):
        raise ValueError(f"{spec.action} {obj}: both hands are full")
      return other(holder), "support"
    pref = self.off if spec.hand == "off" else self.main
    for h in (pref, other(pref)):
      if free(h):
        return h, None
    raise ValueError(f"{spec.action} {obj}: both hands are full")

  def _required_station(self, spec: world_lib.StepSpec, obj: str | None, target: str | None,
                        subtask_station: str) -> str:
    """Where the wearer must stand: by the free object acted on, else by the target."""
    if spec.action == "lift":
      return self.station
    if spec.action in ("reach", "grasp", "open", "close", "push") and obj in self.where:
      return self.where[obj]
    if target in self.where:
      return self.where[target]
    return subtask_station

  def run_step(self, subtask: world_lib.Subtask, spec: world_lib.StepSpec, resolve) -> None:
    if spec.action == "look":
      self.look(subtask.name)
      return
    obj = resolve(spec.obj)
    target = None if spec.target in (None, world_lib.SURFACE) else resolve(spec.target)
    self.move_to(subtask.name, self._required_station(spec, obj, target, subtask.station))
    if self.full:
      return
    st = self.place.stations[self.station]
    acting, assist = self._hand_for(spec, obj, target)
    o = self.spec(obj)
    both = spec.hand == "both"
    hand_words = "both hands" if both else f"the {acting} hand"
    step_hand = "both" if assist else acting
    seconds = self.rng.uniform(*DURATIONS[spec.action])
    focus = self.pose[obj][:3] if obj in self.pose else self._present_point()
    dest = None
    t_disp = self.spec(target).display if target else st.display
    kw = dict(hand=step_hand, acting=acting, assist=assist, target=target)
    a = spec.action
    if a == "reach":
      self._emit(subtask.name, a, obj, seconds, label=f"Reach for {o.display}",
                 description=f"Reach for the {o.display} on the {st.display} with {hand_words}.",
                 focus=focus, **kw)
    elif a == "grasp":
      self._emit(subtask.name, a, obj, seconds, label=f"Grasp {o.display}",
                 description=f"Grasp the {o.display} with {hand_words}.", focus=focus, **kw)
      self.hands[acting] = obj
      if both:
        self.hands["left" if acting == "right" else "right"] = obj
      self.grasp_yaw[obj] = float(self.pose[obj][3] - self.root[2])
      self._lifted[obj] = self.pose[obj][:3]
      del self.pose[obj], self.where[obj]
    elif a == "lift":
      self._emit(subtask.name, a, obj, seconds, label=f"Lift {o.display}",
                 description=f"Lift the {o.display} off the {st.display}.",
                 focus=self._lifted[obj] + np.array([0.0, 0.0, 0.15]), **kw)
    elif a == "place":
      yaw = self.grasp_yaw[obj] + self.root[2]
      if target is not None:
        t = self.pose[target]
        ts = self.spec(target)
        xy = t[:2] + self.rng.uniform(-0.3, 0.3, 2) * ts.radius * 0.5
        z = (t[2] - ts.half_height + 0.01 if ts.container else t[2] + ts.half_height) + o.half_height
        into = "into" if ts.container else "on"
        words = f"Put the {o.display} {into} the {ts.display}."
        rest_at = self.place.stations[self.where[target]]
      else:
        xy = self._free_slot(st, obj, prefer=-0.15 if acting == "right" else 0.15)
        z = st.top + o.half_height
        words = f"Place the {o.display} on the {st.display}."
        rest_at = st
      dest = (float(xy[0]), float(xy[1]), float(z), float(yaw))
      self._emit(subtask.name, a, obj, seconds, label=f"Place {o.display}", description=words,
                 focus=dest[:3], dest=dest, **kw)
      self.hands[acting] = None
      if both:
        self.hands["left"], self.hands["right"] = None, None
      self._put(obj, rest_at, xy, z, yaw)
    elif a == "pour":
      t = self.spec(target)
      onto = "onto" if t.category == "plant" else "into"
      self._emit(subtask.name, a, obj, seconds, label=f"Pour {o.display}",
                 description=f"Pour {o.contents} from the {o.display} {onto} the {t.display}.",
                 focus=self.pose[target][:3], **kw)
    elif a in ("stir", "cut", "wipe"):
      bouts = int(self.rng.integers(spec.repeat[0], spec.repeat[1] + 1))
      if a == "wipe" and target is None:
        focus = np.array([*st.surface_xy(0.0, min(0.2, st.depth / 2)), st.top])
      elif target in self.pose:
        focus = self.pose[target][:3]
      else:
        focus = self._present_point()
      verb = {"stir": "Stir", "cut": "Cut", "wipe": "Wipe"}[a]
      extra = (f" while the {'left' if acting == 'right' else 'right'} hand holds it"
               if a == "cut" else "")
      for _ in range(bouts):
        if self.full:
          break
        self._emit(subtask.name, a, obj, self.rng.uniform(*DURATIONS[a]),
                   label=f"{verb} {t_disp}",
                   description=f"{verb} the {t_disp} with the {o.display}{extra}.",
                   on_surface=target is None, focus=focus, **kw)
    elif a in ("open", "close"):
      self._emit(subtask.name, a, obj, seconds, label=f"{a.capitalize()} {o.display}",
                 description=f"{a.capitalize()} the {o.display} with {hand_words}.",
                 focus=focus, **kw)
    elif a == "push":
      p = self.pose[obj]
      rel = p[:2] - np.asarray(st.front)
      lateral, depth = float(rel @ st.left), float(rel @ st.forward)
      limit = st.width / 2 - o.radius - 0.02
      d = float(self.rng.uniform(0.08, 0.16)) * (1 if acting == "right" else -1)
      if abs(np.clip(lateral + d, -limit, limit) - lateral) < 0.04:
        d = -d
      new_lat = float(np.clip(lateral + d, -limit, limit))
      xy = st.surface_xy(new_lat, depth)
      dest = (float(xy[0]), float(xy[1]), float(p[2]), float(p[3]))
      self._emit(subtask.name, a, obj, seconds, label=f"Push {o.display}",
                 description=f"Push the {o.display} along the {st.display}.", focus=p[:3],
                 dest=dest, **kw)
      self.pose[obj] = np.array(dest)
    else:
      raise ValueError(f"unknown action {a!r}")

  # --------------------------------------------------------------------------- procedure

  def run(self) -> None:
    act = self.activity
    pool = list(self.session.variants[act.pool]) if act.pool else [None]
    if self.rng.random() < 0.4:
      self.look(act.subtasks[0].name)
    rounds = 0
    while not self.full:
      start = self.frame
      order = pool if rounds == 0 else [pool[i] for i in self.rng.permutation(len(pool))]
      plan = [(sub, None) for sub in act.setup]
      for item in order:
        plan += [(sub, item) for sub in act.body]
      plan += [(sub, order[-1]) for sub in act.finish]
      for sub, item in plan:
        if self.full:
          break
        if sub.p < 1.0 and self.rng.random() >= sub.p:
          continue
        if self.rng.random() < P_LOOK and not (self.steps and self.steps[-1].step.action == "look"):
          self.look(sub.name)
        resolve = lambda cat, item=item: None if cat is None else (
            item if cat == act.pool else self.session.variants[cat][0])
        for spec in sub.steps:
          if self.full:
            break
          if spec.p < 1.0 and self.rng.random() >= spec.p:
            continue
          self.run_step(sub, spec, resolve)
      rounds += 1
      if self.frame == start:  # every optional part was skipped: pause instead of spinning
        self.look(act.subtasks[0].name)


def task_text(world: world_lib.World, session: world_lib.SessionPlan, activity: str) -> str:
  """The activity's "Main Task" sentence with this session's objects and furniture."""
  place = world.places[session.place]
  names = {cat: world.objects[v[0]].display for cat, v in session.variants.items()}
  names.update({k: st.display for k, st in place.stations.items()})
  return world.activities[activity].task.format(**names)


def plan_episode(world: world_lib.World, session: world_lib.SessionPlan, episode: int,
                 num_frames: int, rng: np.random.Generator) -> Script:
  """The episode's objects, their start poses and its steps over exactly num_frames."""
  if num_frames < 1:
    raise ValueError(f"an episode needs at least one frame, got {num_frames}")
  if not 0 <= episode < len(session.episodes):
    raise ValueError(f"session {session.session_id} plans {len(session.episodes)} episodes, "
                     f"not episode {episode}")
  ep = session.episodes[episode]
  planner = _Planner(world, session, ep, num_frames, rng)
  poses = np.stack([object_pose(*planner.pose[n]) for n in planner.objects])
  planner.run()
  return Script(ep.activity, task_text(world, session, ep.activity), planner.main,
                planner.objects, poses, tuple(planner.steps), num_frames)

"""World-space primitives and the object builders of the synthetic street (cars, people, poles...).

Coordinates are metres in the camera's frame: x right, y up (ground at y = 0), z forward. Every
object is a short list of planar polygons (:class:`Prim`) that are either fronto-parallel (z =
const) or parallel to the street (x = const), so the rasterizer can recover each pixel's exact
depth from the plane alone (deferred shading, see ``scene``). Polygons carry their
Cityscapes train id, a material, an albedo and, for night, an emission; builders also return the
lights an object carries (head/tail lights, street lamps). Nothing here depends on image size.
"""

from __future__ import annotations

import numpy as np

# Cityscapes train ids (nightseg.data.catalog.CITYSCAPES_CLASSES order).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TLIGHT, TSIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
IGNORE = 255

# Materials select the procedural texture (amplitudes in scene.MATERIAL_NOISE).
(M_SKY, M_ASPHALT, M_PAVING, M_GRASS, M_FACADE, M_CONCRETE, M_FENCE, M_METAL, M_FOLIAGE, M_BARK,
 M_PAINT, M_GLASS, M_RUBBER, M_CLOTH, M_SKIN, M_LAMP, M_SIGN, M_DIRT) = range(18)

PLANE_GROUND, PLANE_Z, PLANE_X = 0, 1, 2


def lin(rgb) -> tuple[float, float, float]:
    """sRGB 0..255 -> linear albedo (gamma 2.2), the space all shading happens in."""
    return tuple(float((c / 255.0) ** 2.2) for c in rgb)


class Prim:
    """One polygon (or thick polyline) in a plane, with what the G-buffer needs to shade it."""

    __slots__ = ("pts", "label", "mat", "rgb", "emit", "normal", "axis", "plane", "win", "thick")

    def __init__(self, pts, label, mat, rgb, axis, plane, normal, emit=None, win=None, thick=0.0):
        self.pts = np.asarray(pts, dtype=np.float64)
        self.label, self.mat, self.rgb, self.emit = label, mat, rgb, emit
        self.axis, self.plane, self.normal, self.win, self.thick = axis, plane, normal, win, thick


class Light:
    """A point or spot light for the night render; ``rgb`` includes the power, calibrated so that
    the sun gives an irradiance of ~2.6. Head lights are low beams: ``near`` (m) suppresses the
    road right in front (beams aim ahead) and ``cutoff`` scales what lies above the lamp."""

    __slots__ = ("pos", "rgb", "dir", "cos_outer", "reflect", "near", "cutoff", "illum")

    def __init__(self, pos, rgb, direction=None, cos_outer=-1.0, reflect=True, near=0.0, cutoff=1.0,
                 illum=True):
        self.pos = np.asarray(pos, dtype=np.float32)
        self.rgb = np.asarray(rgb, dtype=np.float32)
        self.dir = None if direction is None else (np.asarray(direction, np.float32)
                                                   / np.linalg.norm(direction)).astype(np.float32)
        self.cos_outer, self.reflect, self.near, self.cutoff = cos_outer, reflect, near, cutoff
        self.illum = illum  # False: only glows and reflects (tail lights are too weak to light much)


def face_z(xy, z, label, mat, rgb, emit=None, win=None, thick=0.0) -> Prim:
    """A polygon given as (x, y) points in the fronto-parallel plane at depth ``z``."""
    xy = np.asarray(xy, dtype=np.float64)
    pts = np.empty((len(xy), 3))
    pts[:, :2], pts[:, 2] = xy, z
    return Prim(pts, label, mat, rgb, PLANE_Z, z, (0.0, 0.0, -1.0), emit, win, thick)


def face_x(zy, x, label, mat, rgb, emit=None, win=None) -> Prim:
    """A polygon given as (z, y) points in the plane x = ``x`` (facing the camera's axis)."""
    zy = np.asarray(zy, dtype=np.float64)
    pts = np.empty((len(zy), 3))
    pts[:, 0], pts[:, 1], pts[:, 2] = x, zy[:, 1], zy[:, 0]
    return Prim(pts, label, mat, rgb, PLANE_X, x, (1.0 if x < 0 else -1.0, 0.0, 0.0), emit, win)


_CIRCLES: dict[int, np.ndarray] = {}


def ellipse(cx, cy, rx, ry, n=14) -> np.ndarray:
    """An n-gon approximating an axis-aligned ellipse (unit circles are cached: builders are hot)."""
    c = _CIRCLES.get(n)
    if c is None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        c = _CIRCLES[n] = np.column_stack([np.cos(t), np.sin(t)])
    return c * (rx, ry) + (cx, cy)


def ring(cx, cy, r, n=14) -> np.ndarray:
    """A closed circle outline (first point repeated) for thick polylines such as bicycle tyres."""
    e = ellipse(cx, cy, r, r, n)
    return np.vstack([e, e[:1]])


def rect(x0, x1, y0, y1) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def jitter(rng, rgb, amount=0.12):
    """Vary an sRGB colour's brightness and channels a little (linear result), so no two objects match."""
    r = rng.random(4)
    b = 1 + amount * (2 * r[0] - 1)
    return tuple((min(max(c * b * (1 + .4 * amount * (2 * k - 1)), 0.0), 255.0) / 255.0) ** 2.2
                 for c, k in zip(rgb, r[1:], strict=True))


def pick(rng, options, weights=None):
    """One of ``options`` (uniform, or proportional to ``weights``)."""
    if weights is None:
        return options[int(rng.random() * len(options))]
    r, acc = rng.random() * sum(weights), 0.0
    for option, w in zip(options, weights, strict=True):
        acc += w
        if r < acc:
            return option
    return options[-1]


def person(rng, x, z, label=PERSON, h=None) -> list[Prim]:
    """A standing/walking pedestrian facing or leaving the camera (fronto-parallel)."""
    h = h if h is not None else rng.uniform(1.5, 1.95)
    skin = jitter(rng, pick(rng, [(230, 190, 160), (200, 150, 120), (140, 95, 70), (90, 60, 45)]), .05)
    top = jitter(rng, pick(rng, [(30, 30, 35), (200, 40, 40), (40, 70, 150), (220, 220, 215),
                                 (90, 110, 70), (120, 80, 60), (170, 150, 60)]), .15)
    legs = jitter(rng, pick(rng, [(35, 40, 60), (30, 30, 30), (110, 100, 90), (60, 70, 110)]), .15)
    step = rng.uniform(-0.09, 0.09) * h
    hw = 0.13 * h
    prims = [face_z([(x - .1 * h, .5 * h), (x - .03 * h, .5 * h), (x - .035 * h + step, 0),
                     (x - .095 * h + step, 0)], z, label, M_CLOTH, legs),
             face_z([(x + .03 * h, .5 * h), (x + .1 * h, .5 * h), (x + .095 * h - step, 0),
                     (x + .035 * h - step, 0)], z, label, M_CLOTH, legs),
             face_z([(x - hw, .82 * h), (x + hw, .82 * h), (x + .11 * h, .47 * h),
                     (x - .11 * h, .47 * h)], z, label, M_CLOTH, top)]
    for sgn in (-1, 1):  # arms swing opposite to the legs
        sx = x + sgn * hw
        prims.append(face_z([(sx, .81 * h), (sx + sgn * .05 * h, .81 * h),
                             (sx + sgn * .04 * h + sgn * step * .6, .45 * h),
                             (sx + sgn * step * .6, .45 * h)], z, label, M_CLOTH, top))
    prims.append(face_z(ellipse(x, .9 * h, .055 * h, .07 * h, 10), z, label, M_SKIN, skin))
    if rng.random() < 0.7:  # hair or hat
        hair = jitter(rng, pick(rng, [(30, 25, 20), (90, 60, 35), (180, 150, 90), (20, 20, 20)]), .1)
        prims.append(face_z(ellipse(x, .93 * h, .057 * h, .045 * h, 8), z, label, M_CLOTH, hair))
    return prims


def two_wheeler(rng, x, z, kind, heading, ridden, lights_on) -> tuple[list[Prim], list[Light]]:
    """A bicycle or motorcycle seen from the side (``heading`` = +1 right, -1 left) in the plane
    at depth ``z``, optionally with its rider (Cityscapes: rider label for the person on it)."""
    d = heading
    frame_rgb = jitter(rng, pick(rng, [(30, 30, 30), (180, 30, 30), (30, 60, 150), (200, 200, 200),
                                       (30, 110, 60)]), .1)
    tyre = lin((20, 20, 20))
    prims: list[Prim] = []
    lights: list[Light] = []
    if kind == BICYCLE:
        r, half = 0.34, 0.52
        for cx in (x - d * half, x + d * half):
            prims.append(face_z(ring(cx, r, r), z, BICYCLE, M_RUBBER, tyre, thick=0.045))
        bb, seat, head = (x, .3), (x - .15 * d, .85), (x + .38 * d, .85)
        frame = [(x - d * half, r), bb, seat, head, (x + d * half, r), head, bb]
        prims.append(face_z(frame, z, BICYCLE, M_METAL, frame_rgb, thick=0.04))
        hip, hand = (x - .15 * d, .92), (x + .4 * d, .98)
    else:
        r, half = 0.3, 0.7
        for cx in (x - d * half, x + d * half):
            prims.append(face_z(ellipse(cx, r, r, r, 14), z, MOTORCYCLE, M_RUBBER, tyre))
        body = [(x - .6 * d, .7), (x - .45 * d, .45), (x + .45 * d, .4), (x + .62 * d, .8),
                (x + .15 * d, .95), (x - .3 * d, .85)]
        prims.append(face_z(body, z, MOTORCYCLE, M_PAINT, frame_rgb))
        engine = rect(x - .25 * d, x + .2 * d, .25, .5)
        prims.append(face_z(engine, z, MOTORCYCLE, M_METAL, lin((50, 50, 55))))
        on = 1.0 if (ridden and lights_on) else 0.0
        prims.append(face_z(ellipse(x + .68 * d, .82, .07, .07, 8), z, MOTORCYCLE, M_LAMP,
                            lin((220, 220, 210)), (6 * on, 6 * on, 5 * on)))
        if on:
            lights.append(Light((x + .75 * d, .82, z), (20, 19, 16), (d, -0.1, 0), np.cos(np.radians(30)),
                                near=4, cutoff=.3))
        hip, hand = (x - .2 * d, 1.0), (x + .45 * d, 1.05)
    if ridden:
        top = jitter(rng, pick(rng, [(30, 30, 35), (200, 60, 40), (40, 70, 150), (220, 210, 60)]), .15)
        legs = jitter(rng, pick(rng, [(35, 40, 60), (30, 30, 30), (100, 95, 90)]), .15)
        shoulder = (hip[0] + .2 * d, hip[1] + .55)
        knee = (hip[0] + .32 * d, hip[1] - .22)
        prims.append(face_z([hip, knee, (x + .02 * d, .3)], z, RIDER, M_CLOTH, legs, thick=0.13))
        prims.append(face_z([hip, shoulder], z, RIDER, M_CLOTH, top, thick=0.32))
        prims.append(face_z([shoulder, hand], z, RIDER, M_CLOTH, top, thick=0.09))
        helmet = kind == MOTORCYCLE or rng.random() < 0.4
        head_rgb = jitter(rng, (40, 40, 45) if helmet else (210, 170, 140), .1)
        prims.append(face_z(ellipse(shoulder[0] + .06 * d, shoulder[1] + .18, .12, .13, 10), z,
                            RIDER, M_PAINT if helmet else M_SKIN, head_rgb))
    return prims, lights


def rider_rear(rng, x, z, kind, lights_on) -> tuple[list[Prim], list[Light]]:
    """A cyclist or motorcyclist riding away from the camera: wheel edge-on, rider's back."""
    label = BICYCLE if kind == BICYCLE else MOTORCYCLE
    tyre_w = 0.05 if kind == BICYCLE else 0.16
    prims = [face_z(rect(x - tyre_w / 2, x + tyre_w / 2, 0, .66), z, label, M_RUBBER, lin((20, 20, 20)))]
    if kind == MOTORCYCLE:
        prims.append(face_z(rect(x - .3, x + .3, .45, .85), z, label, M_PAINT, jitter(rng, (40, 40, 45))))
    elif rng.random() < 0.5:  # rear rack with a bag
        prims.append(face_z(rect(x - .16, x + .16, .62, .9), z, label, M_CLOTH, jitter(rng, (40, 40, 40))))
    on = 1.0 if lights_on else 0.0
    prims.append(face_z(rect(x - .06, x + .06, .7, .78), z, label, M_LAMP, lin((160, 20, 20)),
                        (1.5 * on, .04 * on, .02 * on)))
    top = jitter(rng, pick(rng, [(30, 30, 35), (200, 60, 40), (40, 70, 150), (230, 230, 60)]), .15)
    legs = jitter(rng, pick(rng, [(35, 40, 60), (30, 30, 30)]), .15)
    for sgn in (-1, 1):
        prims.append(face_z([(x + sgn * .05, 1.0), (x + sgn * .16, 1.0), (x + sgn * .14, .3),
                             (x + sgn * .07, .3)], z, RIDER, M_CLOTH, legs))
    back = [(x - .2, 1.5), (x + .2, 1.5), (x + .17, .95), (x - .17, .95)]
    prims.append(face_z(back, z, RIDER, M_CLOTH, top))
    bar = .3 if kind == BICYCLE else .38  # handlebar ends stick out beside the rider
    prims.append(face_z([(x - bar, 1.02), (x + bar, 1.02)], z, label, M_METAL, lin((40, 40, 40)), thick=.05))
    head = (40, 40, 45) if kind == MOTORCYCLE else (60, 45, 35)
    prims.append(face_z(ellipse(x, 1.63, .11, .13, 10), z, RIDER, M_CLOTH, jitter(rng, head)))
    lights = [Light((x, .74, z + .05), (0.8, .03, .02), illum=False)] if lights_on else []
    return prims, lights


def tree(rng, x, z, foliage_rgb, conifer_p=0.0) -> list[Prim]:
    """A tree: trunk plus a crown of overlapping ellipses, or a conifer (all 'vegetation')."""
    trunk_h, crown_r = rng.uniform(1.8, 3.5), rng.uniform(1.4, 3.2)
    tw = rng.uniform(0.2, 0.4)
    prims = [face_z(rect(x - tw / 2, x + tw / 2, 0, trunk_h + crown_r * .6), z, VEG, M_BARK,
                    jitter(rng, (75, 60, 45)))]
    if rng.random() < conifer_p:
        prims.append(face_z([(x - crown_r * .8, trunk_h * .6), (x + crown_r * .8, trunk_h * .6),
                             (x, trunk_h + crown_r * 2.6)], z, VEG, M_FOLIAGE, jitter(rng, (40, 75, 40))))
        return prims
    cy = trunk_h + crown_r * 0.9
    for _ in range(rng.integers(3, 7)):
        ox, oy = rng.normal(0, .45 * crown_r), rng.normal(0, .3 * crown_r)
        rx = crown_r * rng.uniform(.55, .9)
        rgb = tuple(c * rng.uniform(.75, 1.2) for c in foliage_rgb)
        prims.append(face_z(ellipse(x + ox, cy + oy, rx, rx * rng.uniform(.8, 1.1), 14), z, VEG,
                            M_FOLIAGE, rgb))
    return prims


def street_lamp(rng, x, z, height, reach, lamp_rgb, lit) -> tuple[list[Prim], list[Light]]:
    """A lamp post (Cityscapes: 'pole', lamp head included) with its light pointing down."""
    metal = jitter(rng, (110, 112, 115), .2)
    w = rng.uniform(.14, .22)
    hx = x + reach
    prims = [face_z(rect(x - w / 2, x + w / 2, 0, height), z, POLE, M_METAL, metal)]
    if abs(reach) > 0.05:
        prims.append(face_z([(x, height - .1), (hx, height + .15)], z, POLE, M_METAL, metal, thick=.09))
    prims.append(face_z([(hx - .35, height + .05), (hx + .35, height + .05), (hx + .28, height + .3),
                         (hx - .28, height + .3)], z, POLE, M_METAL, metal))
    emit = tuple(12.0 * c for c in lamp_rgb) if lit else None
    prims.append(face_z(rect(hx - .26, hx + .26, height - .02, height + .08), z, POLE, M_LAMP,
                        lin((200, 200, 190)), emit))
    lights = [Light((hx, height - .1, z), tuple(20 * c for c in lamp_rgb), (0, -1, 0),
                    np.cos(np.radians(72)))] if lit else []
    return prims, lights


def traffic_light(rng, x, z, overhead_reach=0.0) -> list[Prim]:
    """A pole with a three-lamp housing, one lamp on (red, amber or green)."""
    metal = jitter(rng, (90, 92, 95), .2)
    h = rng.uniform(2.6, 3.4) if overhead_reach == 0 else rng.uniform(5.0, 6.0)
    hx = x + overhead_reach
    prims = [face_z(rect(x - .09, x + .09, 0, h + (0.2 if overhead_reach else 1.0)), z, POLE, M_METAL, metal)]
    if overhead_reach:
        prims.append(face_z([(x, h + .1), (hx, h + .1)], z, POLE, M_METAL, metal, thick=.12))
        y0 = h - 0.95
    else:
        y0 = h
    prims.append(face_z(rect(hx - .18, hx + .18, y0, y0 + 1.0), z, TLIGHT, M_METAL, lin((30, 32, 30))))
    active = rng.integers(3)
    colours = [(255, 40, 30), (255, 170, 20), (40, 255, 120)]
    for i, col in enumerate(colours):
        on = i == active
        day = jitter(rng, col if on else (60, 60, 55), .05)
        emit = tuple(6.0 * c for c in lin(col)) if on else None
        prims.append(face_z(ellipse(hx, y0 + .82 - .32 * i, .11, .11, 10), z, TLIGHT, M_LAMP, day, emit))
    return prims


def traffic_sign(rng, x, z) -> list[Prim]:
    """A sign on a post: round prohibitory/mandatory, warning triangle, square info or diamond."""
    h = rng.uniform(2.0, 2.8)
    prims = [face_z(rect(x - .05, x + .05, 0, h), z, POLE, M_METAL, jitter(rng, (130, 130, 135), .2))]
    kind = rng.integers(5)
    red, white = lin((200, 25, 30)), lin((235, 235, 230))
    blue, yellow = lin((20, 70, 170)), lin((245, 190, 20))
    c = h + .35
    if kind == 0:
        prims += [face_z(ellipse(x, c, .35, .35, 16), z, TSIGN, M_SIGN, red),
                  face_z(ellipse(x, c, .26, .26, 16), z, TSIGN, M_SIGN, white)]
    elif kind == 1:
        prims += [face_z(ellipse(x, c, .33, .33, 16), z, TSIGN, M_SIGN, blue),
                  face_z([(x - .05, c - .2), (x + .05, c - .2), (x + .05, c + .05), (x + .15, c + .05),
                          (x, c + .22), (x - .15, c + .05), (x - .05, c + .05)], z, TSIGN, M_SIGN, white)]
    elif kind == 2:
        prims += [face_z([(x - .42, c - .3), (x + .42, c - .3), (x, c + .42)], z, TSIGN, M_SIGN, red),
                  face_z([(x - .28, c - .22), (x + .28, c - .22), (x, c + .26)], z, TSIGN, M_SIGN, white)]
    elif kind == 3:
        prims += [face_z(rect(x - .32, x + .32, c - .32, c + .32), z, TSIGN, M_SIGN, blue),
                  face_z(rect(x - .08, x + .08, c - .2, c + .2), z, TSIGN, M_SIGN, white)]
    else:
        prims += [face_z([(x, c - .42), (x + .42, c), (x, c + .42), (x - .42, c)], z, TSIGN, M_SIGN, white),
                  face_z([(x, c - .3), (x + .3, c), (x, c + .3), (x - .3, c)], z, TSIGN, M_SIGN, yellow)]
    return prims

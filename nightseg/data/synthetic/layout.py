"""Procedural street layouts: a camera on a straight road lined with lots, plus everything on it.

A :class:`Layout` is drawn from one random generator and never looks at the image size, so the same
scene renders alike at any resolution, and day and night share it (hence share the label). The
street follows Cityscapes-like urban scenes (Cordts et al. 2016): right-hand traffic, lanes with
dashed and solid markings, curbside terrain strips, sidewalks, building rows with gaps, parks behind
walls or fences, intersections with traffic lights and crosswalks, parked and moving traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nightseg.data.synthetic.objects import (
    BICYCLE,
    BUILDING,
    FENCE,
    M_CONCRETE,
    M_FACADE,
    M_FENCE,
    M_FOLIAGE,
    MOTORCYCLE,
    SIDEWALK,
    TERRAIN,
    VEG,
    WALL,
    Light,
    Prim,
    face_x,
    face_z,
    jitter,
    person,
    pick,
    rider_rear,
    street_lamp,
    traffic_light,
    traffic_sign,
    tree,
    two_wheeler,
)
from nightseg.data.synthetic.vehicles import BUS, CAR, TRAIN, TRUCK, vehicle

# Draw bands (painter's order): a structure beyond the building line can never hide anything
# inside the street corridor, so bands go outside-in and depth sorting is only needed within one.
BACKDROP, LOTS, LOT_EDGE, STREET = range(4)

BUILDING_COLOURS = [(200, 185, 160), (150, 150, 150), (215, 210, 200), (150, 80, 60), (110, 62, 50),
                    (210, 180, 110), (120, 130, 140), (200, 150, 140), (170, 165, 155), (90, 90, 95)]
FOLIAGE = [(60, 100, 40), (45, 85, 35), (80, 110, 45), (55, 90, 55), (95, 115, 50)]
SODIUM, LED = (1.0, 0.5, 0.16), (0.85, 0.9, 1.0)


@dataclass
class Camera:
    height: float      # metres above the road
    focal: float       # focal length as a fraction of the image width
    cx: float          # principal point column as a fraction of the width (yaw of the road)
    horizon: float     # horizon row as a fraction of the height (pitch)


@dataclass
class Ground:
    """What lies on the road plane (y = 0), classified per pixel by ``scene._ground``."""
    road: tuple[float, float]                        # x extent of the carriageway
    markings: list[tuple[float, float, float]]       # (x, dash period m (0 = solid), duty)
    bands: list[tuple[float, float, int]]            # (x0, x1, class) strips beside the road
    line: tuple[float, float]                        # building lines left (<0) and right (>0)
    cross: tuple[float, float] | None = None         # z range of a crossing street
    crosswalk: tuple[float, float] | None = None     # z range of zebra stripes
    rails: list[float] = field(default_factory=list)  # tram rail x positions
    lot_terrain: tuple[bool, bool] = (True, True)    # behind the building lines: grass, else paving
    colours: dict[str, tuple] = field(default_factory=dict)


@dataclass
class Layout:
    """One scene, independent of image size: everything both renderers and the label need."""
    camera: Camera
    ground: Ground
    objects: list[tuple[int, float, list[Prim]]]     # (band, near depth, prims)
    lights: list[Light]
    casters: list[tuple]     # day shadows: ("box", x0, x1, z0, z1, height) or ("disc", x, z, radius, y)
    day: dict
    night: dict
    hood: tuple | None                               # (height fraction, bulge, sRGB) of the ego vehicle


def sample_layout(rng: np.random.Generator) -> Layout:
    """One random street scene (see the module docstring)."""
    cam = Camera(height=rng.uniform(1.25, 2.1), focal=rng.uniform(0.55, 0.8),
                 cx=0.5 + rng.uniform(-0.12, 0.12), horizon=rng.uniform(0.36, 0.5))
    lane_w = rng.uniform(2.9, 3.6)
    n_same, n_opp = int(rng.choice([1, 2, 2, 3])), int(rng.choice([0, 1, 1, 2]))
    ego = int(rng.integers(n_same))
    xl = -(n_opp + ego + 0.5) * lane_w
    lanes = [(xl + (i + 0.5) * lane_w, i >= n_opp) for i in range(n_opp + n_same)]  # (centre, same dir)
    xr = xl + (n_opp + n_same) * lane_w
    park = [rng.random() < 0.45, rng.random() < 0.5]
    road = (xl - 2.3 * park[0], xr + 2.3 * park[1])
    markings = [(xl + i * lane_w, 0.0 if i == n_opp else 9.0, 0.35) for i in range(1, n_opp + n_same)]
    if rng.random() < 0.6:
        markings += [(xl + 0.2, 0.0, 1.0), (xr - 0.2, 0.0, 1.0)]
    bands, line = [], []
    for sgn, edge in ((-1, road[0]), (1, road[1])):
        x = edge
        # outwards from the curb: a grass strip (sometimes), the sidewalk, a front lawn (sometimes)
        strips = ((TERRAIN, .3, (.8, 2.5)), (SIDEWALK, 1., (1.8, 5.)), (TERRAIN, .2, (1., 4.)))
        for cls, p, (w0, w1) in strips:
            if rng.random() < p:
                w = rng.uniform(w0, w1)
                bands.append((min(x, x + sgn * w), max(x, x + sgn * w), cls))
                x += sgn * w
        line.append(x)
    z_end = rng.uniform(70, 220)
    cross = None
    if rng.random() < 0.4:
        c0 = rng.uniform(12, 45)
        cross = (c0, c0 + rng.uniform(9, 16))
    crosswalk = None
    if cross is not None and rng.random() < 0.7:
        crosswalk = (cross[0] - 4.5, cross[0] - 1.0)
    elif rng.random() < 0.15:
        c = rng.uniform(10, 30)
        crosswalk = (c, c + 3.5)
    ground = Ground(road, markings, bands, (line[0], line[1]), cross, crosswalk,
                    lot_terrain=(rng.random() < .6, rng.random() < .6), colours=_ground_colours(rng))
    objects: list[tuple[int, float, list[Prim]]] = []
    lights: list[Light] = []
    casters: list[tuple] = []
    night = _night_params(rng)
    _backdrop(rng, objects, z_end)
    for sgn, x_line in ((-1, line[0]), (1, line[1])):
        _lots(rng, objects, casters, lights, sgn, x_line, z_end, cross, night)
    _street_furniture(rng, objects, casters, lights, ground, night)
    _traffic(rng, objects, casters, lights, ground, lanes, lane_w, park)
    _people(rng, objects, lights, ground, night)
    hood = None
    if rng.random() < 0.25:
        paint = pick(rng, [(30, 30, 35), (200, 200, 205), (60, 20, 20)])
        hood = (rng.uniform(0.04, 0.09), rng.uniform(0.02, 0.06), paint)
    return Layout(cam, ground, objects, lights, casters, _day_params(rng), night, hood)


def _ground_colours(rng) -> dict[str, tuple]:
    return {"road": jitter(rng, pick(rng, [(85, 85, 88), (105, 103, 100), (70, 70, 72)]), .1),
            "sidewalk": jitter(rng, pick(rng, [(165, 160, 150), (180, 150, 140), (140, 140, 140)]), .1),
            "grass": jitter(rng, pick(rng, [(100, 130, 60), (120, 135, 70), (140, 125, 80)]), .1),
            "dirt": jitter(rng, (130, 110, 85), .1), "marking": jitter(rng, (230, 230, 225), .05)}


def _day_params(rng) -> dict:
    overcast = rng.random() < 0.3
    return {"sun_elevation": np.radians(rng.uniform(15, 65)), "sun_azimuth": rng.uniform(0, 2 * np.pi),
            "overcast": overcast, "haze": rng.uniform(250, 900), "clouds": rng.uniform(0, 0.8),
            "exposure": rng.uniform(0.85, 1.2),
            "zenith": jitter(rng, (175, 178, 185) if overcast else (70, 120, 200), .08)}


def _night_params(rng) -> dict:
    sodium = rng.random() < 0.65
    return {"lamp_rgb": SODIUM if sodium else LED, "lamp_mix": rng.random() < 0.15,
            "ambient": rng.uniform(0.002, 0.01),
            "skyglow": jitter(rng, (70, 45, 30) if sodium else (40, 45, 60), .15),
            "window_lit": rng.uniform(0.15, 0.6), "wetness": rng.uniform(0, 1) if rng.random() < 0.4 else 0.0,
            "ego_lights": rng.random() < 0.85, "exposure": rng.uniform(0.9, 1.8),
            "noise": rng.uniform(0.012, 0.035)}


def _facade_windows(rng, lit_share) -> tuple:
    """(pitch along the street, floor height, window width share, height share, ground floor top,
    share lit at night, hash seed, shop front) -- windows are computed per pixel in world units."""
    band = rng.random() < 0.2  # office ribbon windows
    width = rng.uniform(.8, .95) if band else rng.uniform(.35, .6)
    return (rng.uniform(2.2, 3.8), rng.uniform(2.9, 3.5), width,
            rng.uniform(.4, .6), rng.uniform(3.0, 4.5), lit_share * rng.uniform(.5, 1.5),
            float(rng.integers(1, 2**20)), float(rng.random() < 0.5))


def _backdrop(rng, objects, z_end) -> None:
    """The far end: a row of fronto-parallel buildings or a tree line closing the street."""
    if rng.random() < 0.15:
        return  # open road to the horizon
    prims = []
    x = -rng.uniform(60, 100)
    while x < 100:
        w = rng.uniform(8, 30)
        if rng.random() < 0.25:  # a tree line: one bumpy crown silhouette (trees far away are tiny)
            xs = np.linspace(x, x + w, max(int(w / 2), 3))
            top = rng.uniform(6, 14) + rng.uniform(-2, 2, len(xs))
            outline = [(x, 0)] + list(zip(xs, top, strict=True)) + [(x + w, 0)]
            prims.append(face_z(outline, z_end + 1, VEG, M_FOLIAGE, jitter(rng, pick(rng, FOLIAGE))))
        else:
            h = rng.uniform(6, 35)
            prims.append(face_z([(x, 0), (x + w, 0), (x + w, h), (x, h)], z_end, BUILDING, M_FACADE,
                                jitter(rng, pick(rng, BUILDING_COLOURS)), win=_facade_windows(rng, 0.4)))
        x += w
    objects.append((BACKDROP, z_end, prims))


def _lots(rng, objects, casters, lights, sgn, x_line, z_end, cross, night) -> None:
    """Buildings, parks and gaps along one side (sgn -1 left, +1 right) from behind the camera."""
    z = rng.uniform(-12, 0)
    while z < z_end:
        if cross and cross[0] - 0.5 <= z < cross[1]:
            z = cross[1]
        stop = cross[0] if cross and z < cross[0] else z_end
        kind = pick(rng, ["building", "park", "gap"], [0.72, 0.18, 0.1])
        z1 = min(z + rng.uniform(8, 32), stop)
        if kind == "building":
            xb = x_line + sgn * rng.uniform(0, 1.5) * (rng.random() < 0.3)
            h = rng.uniform(6, 28) * (1.5 if rng.random() < 0.1 else 1.0)
            rgb = jitter(rng, pick(rng, BUILDING_COLOURS), .1)
            win = _facade_windows(rng, night["window_lit"])
            depth = rng.uniform(40, 80)
            prims = [face_z([(xb, 0), (xb + sgn * depth, 0), (xb + sgn * depth, h), (xb, h)], z, BUILDING,
                            M_FACADE, rgb, win=win),
                     face_x([(z, 0), (z1, 0), (z1, h), (z, h)], xb, BUILDING, M_FACADE, rgb, win=win)]
            if rng.random() < 0.5:  # cornice
                dark = tuple(c * .6 for c in rgb)
                prims.append(face_x([(z, h - .5), (z1, h - .5), (z1, h), (z, h)], xb - sgn * .01, BUILDING,
                                    M_FACADE, dark))
            objects.append((LOTS, z, prims))
            casters.append(("box", min(xb, xb + sgn * depth), max(xb, xb + sgn * depth), z, z1, h))
            if win[7] and rng.random() < 0.5:  # light spilling from a shop front
                lights.append(Light((xb - sgn * 1.5, 2.2, (z + z1) / 2), (1.5, 1.2, 0.8), reflect=False))
        elif kind == "park":
            for _ in range(int(rng.integers(1, 5))):
                xt = x_line + sgn * rng.uniform(2, 15)
                zt = rng.uniform(z, z1)
                objects.append((LOTS, zt, tree(rng, xt, zt, jitter(rng, pick(rng, FOLIAGE)), conifer_p=.3)))
        if kind != "building" and rng.random() < 0.75:
            _boundary(rng, objects, casters, sgn, x_line, z, z1)
        z = z1


def _boundary(rng, objects, casters, sgn, x_line, z0, z1) -> None:
    """A wall, fence or hedge along the building line of an open lot."""
    kind = pick(rng, [WALL, FENCE, VEG], [0.4, 0.35, 0.25])
    x = x_line + sgn * 0.2
    h = rng.uniform(0.8, 2.6) if kind != VEG else rng.uniform(0.8, 2.0)
    if kind == VEG:
        zs = np.arange(z0, z1 + 1e-6, 1.0)
        top = h + rng.uniform(-.25, .25, len(zs))
        poly = [(z0, 0)] + list(zip(zs, top, strict=True)) + [(zs[-1], 0)]
        rgb, mat = jitter(rng, pick(rng, FOLIAGE)), M_FOLIAGE
    else:
        poly = [(z0, 0), (z1, 0), (z1, h), (z0, h)]
        colours = ([(170, 165, 155), (150, 85, 65), (120, 120, 115)] if kind == WALL
                   else [(100, 110, 105), (150, 150, 140)])
        rgb, mat = jitter(rng, pick(rng, colours)), M_CONCRETE if kind == WALL else M_FENCE
    prims = [face_z([(x, 0), (x + sgn * .3, 0), (x + sgn * .3, h), (x, h)], z0, kind, mat, rgb),
             face_x(poly, x, kind, mat, rgb)]
    objects.append((LOT_EDGE, z0, prims))
    if kind != FENCE:
        casters.append(("box", min(x, x + sgn * .3), max(x, x + sgn * .3), z0, z1, h))


def _street_furniture(rng, objects, casters, lights, g: Ground, night) -> None:
    """Lamp posts, street trees, traffic lights at the crossing and signs, at the curbs."""
    lamp_sides = [s for s in (-1, 1) if rng.random() < 0.75] or [1]
    for sgn in lamp_sides:
        edge = g.road[0] if sgn < 0 else g.road[1]
        spacing, h = rng.uniform(16, 34), rng.uniform(6, 9)
        for z in np.arange(rng.uniform(2, spacing), 110, spacing):
            rgb = night["lamp_rgb"]
            if night["lamp_mix"] and rng.random() < .5:  # a street being converted to LED
                rgb = LED if rgb == SODIUM else SODIUM
            prims, lts = street_lamp(rng, edge + sgn * .6, z, h, -sgn * rng.uniform(0.8, 2.0), rgb,
                                     lit=rng.random() < 0.93)
            objects.append((STREET, z, prims))
            lights.extend(lts)
            casters.append(("box", edge + sgn * .6 - .08, edge + sgn * .6 + .08, z - .08, z + .08, h))
    for sgn in (-1, 1):
        if rng.random() < 0.5:
            edge = g.road[0] if sgn < 0 else g.road[1]
            x = edge + sgn * rng.uniform(0.8, 1.6)
            spacing = rng.uniform(6, 14)
            for z in np.arange(rng.uniform(0, spacing), 90, spacing):
                if g.cross and g.cross[0] - 2 < z < g.cross[1] + 2:
                    continue
                foliage = jitter(rng, pick(rng, FOLIAGE))
                objects.append((STREET, z, tree(rng, x + rng.normal(0, .2), z, foliage)))
                casters.append(("disc", x, z, 2.5, 4.5))
    if g.cross:
        for sgn in (-1, 1):
            edge = g.road[0] if sgn < 0 else g.road[1]
            for z, reach in ((g.cross[0] - 1, 0.0), (g.cross[1] + 1, 0.0)):
                overhead = -sgn * rng.uniform(2.5, 5) if (rng.random() < 0.4 and z < g.cross[1]) else reach
                objects.append((STREET, z, traffic_light(rng, edge + sgn * .7, z, overhead)))
    elif g.crosswalk and rng.random() < 0.6:
        objects.append((STREET, g.crosswalk[0], traffic_light(rng, g.road[1] + .7, g.crosswalk[0] - .5)))
    for _ in range(int(rng.integers(0, 4))):
        sgn = pick(rng, [-1, 1])
        edge = g.road[0] if sgn < 0 else g.road[1]
        z = rng.uniform(5, 60)
        objects.append((STREET, z, traffic_sign(rng, edge + sgn * rng.uniform(.4, 1.0), z)))


def _traffic(rng, objects, casters, lights, g: Ground, lanes, lane_w, park) -> None:
    """Moving vehicles per lane (tail lights ahead, head lights oncoming), parked cars at curbs."""
    tram_lane = None
    if rng.random() < 0.08:
        tram_lane = int(rng.integers(len(lanes)))
        xc = lanes[tram_lane][0]
        g.rails += [xc - .72, xc + .72]
    for i, (xc, same) in enumerate(lanes):
        z = rng.uniform(5, 14) if abs(xc) < 1 else rng.uniform(1, 14)
        while z < 110:
            if i == tram_lane and rng.random() < 0.6:
                label = TRAIN
            else:
                label = pick(rng, [CAR, TRUCK, BUS, MOTORCYCLE], [0.86, 0.05, 0.03, 0.06])
            x = xc + rng.normal(0, 0.2)
            if label == MOTORCYCLE:
                if not same:
                    z += 6
                    continue
                prims, lts = rider_rear(rng, x, z, MOTORCYCLE, True)
                length, w = 2.0, 0.8
            else:
                prims, lts, length = vehicle(rng, label, x, z, "rear" if same else "front", True)
                w = 2.5 if label != CAR else 1.9
            if z + length > 1.0:  # skip vehicles entirely behind the camera
                objects.append((STREET, max(z, 0.5), prims))
                lights.extend(lts)
                casters.append(("box", x - w / 2, x + w / 2, z, z + length, 1.5 if label == CAR else 3.0))
            z += length + rng.exponential(14) + 4
            if rng.random() < 0.25:
                break
    for side, on in zip((-1, 1), park, strict=True):
        if not on:
            continue
        x = (g.road[0] + 1.15) if side < 0 else (g.road[1] - 1.15)
        z = rng.uniform(-3, 6)
        while z < 80:
            if rng.random() < 0.8 and not (g.cross and g.cross[0] - 6 < z < g.cross[1]):
                prims, _, length = vehicle(rng, CAR if rng.random() < 0.95 else TRUCK, x, z,
                                           "front" if side < 0 else "rear", False)
                objects.append((STREET, max(z, 0.5), prims))
                casters.append(("box", x - .9, x + .9, z, z + length, 1.5))
            else:
                length = rng.uniform(2, 12)
            z += length + rng.uniform(0.5, 3)


def _people(rng, objects, lights, g: Ground, night) -> None:
    """Pedestrians on the sidewalks and crosswalk, cyclists, parked two-wheelers."""
    walks = [b for b in g.bands if b[2] == SIDEWALK] or [(g.road[1], g.road[1] + 2, SIDEWALK)]
    for _ in range(int(rng.poisson(4.5))):
        x0, x1, _ = walks[rng.integers(len(walks))]
        z = rng.uniform(3, 60)
        for k in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):  # groups
            x = rng.uniform(x0 + .3, x1 - .3) + .5 * k
            objects.append((STREET, z, person(rng, x, z + rng.uniform(-.5, .5))))
    if g.crosswalk and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            z = rng.uniform(*g.crosswalk)
            objects.append((STREET, z, person(rng, rng.uniform(*g.road), z)))
    for _ in range(int(rng.integers(0, 3))):  # cyclists riding with the traffic
        x = g.road[1] - rng.uniform(0.6, 1.5)
        z = rng.uniform(5, 50)
        prims, lts = rider_rear(rng, x, z, BICYCLE, rng.random() < 0.7)
        objects.append((STREET, z, prims))
        lights.extend(lts)
    if rng.random() < 0.35:  # crossing, seen from the side
        z = rng.uniform(*(g.crosswalk or (8, 30)))
        kind = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        prims, lts = two_wheeler(rng, rng.uniform(*g.road), z, kind, pick(rng, [-1, 1]), True, True)
        objects.append((STREET, z, prims))
        lights.extend(lts)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.45 else 0):  # parked on a sidewalk
        x0, x1, _ = walks[rng.integers(len(walks))]
        z = rng.uniform(4, 40)
        kind = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        prims, _ = two_wheeler(rng, (x0 + x1) / 2, z, kind, pick(rng, [-1, 1]), False, False)
        objects.append((STREET, z, prims))

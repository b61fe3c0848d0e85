"""Vehicles for the synthetic street, as data: cars, trucks, buses and trams (Cityscapes 'train').

Each kind is a side profile (t along the length, 0 = rear .. 1 = front; y as a fraction of the
height) and rear/front faces (s across the width, 0..1). Every polygon is tagged with a role that
picks its material, day colour and night emission, so head and tail lights glow only at night.
"""

from __future__ import annotations

import numpy as np

from nightseg.data.synthetic.objects import (
    BUS,
    CAR,
    M_GLASS,
    M_LAMP,
    M_METAL,
    M_PAINT,
    M_RUBBER,
    M_SIGN,
    TRAIN,
    TRUCK,
    Light,
    Prim,
    ellipse,
    face_x,
    face_z,
    jitter,
    lin,
    pick,
    rect,
)

# Wheels are (t, radius in metres) on the side; head/tail give (s, y) of the lamps.
MIRROR = "mirror"  # role suffix: also draw the polygon mirrored across the width
CAR_SPEC = dict(
    dims=((1.65, 1.95), (1.35, 1.65), (3.9, 4.9)), wheels=((0.18, 0.31), (0.8, 0.31)),
    side=[("paint", [(0, .18), (1, .18), (1, .55), (.97, .6), (.03, .6)]),
          ("paint", [(.04, .58), (.7, .58), (.52, 1), (.2, 1)]),
          ("glass", [(.09, .62), (.66, .62), (.51, .95), (.22, .95)]),
          ("dark", [(0, .16), (1, .16), (1, .25), (0, .25)])],
    rear=[("paint", rect(0, 1, .18, .6)), ("paint", [(.05, .58), (.95, .58), (.86, 1), (.14, 1)]),
          ("glass", [(.1, .63), (.9, .63), (.84, .94), (.16, .94)]), ("dark", rect(0, 1, .15, .3)),
          ("rubber" + MIRROR, rect(.03, .2, 0, .17)), ("tail" + MIRROR, rect(.02, .2, .44, .55)),
          ("plate", rect(.4, .6, .32, .4))],
    front=[("paint", rect(0, 1, .18, .6)), ("paint", [(.05, .58), (.95, .58), (.86, 1), (.14, 1)]),
           ("glass", [(.08, .62), (.92, .62), (.85, .95), (.15, .95)]), ("dark", rect(0, 1, .15, .28)),
           ("dark", rect(.3, .7, .3, .45)), ("rubber" + MIRROR, rect(.03, .2, 0, .17)),
           ("head" + MIRROR, rect(.03, .24, .42, .52)), ("plate", rect(.4, .6, .2, .27))],
    head=(.13, .47), tail=(.11, .5))
TRUCK_SPEC = dict(
    dims=((2.3, 2.55), (3.0, 3.9), (7.0, 10.0)), wheels=((0.12, 0.5), (0.26, 0.5), (0.88, 0.5)),
    side=[("cargo", rect(0, .76, .28, 1)), ("dark", rect(0, 1, .17, .3)),
          ("paint", [(.78, .2), (1, .2), (1, .7), (.95, .78), (.78, .78)]),
          ("glass", rect(.84, .96, .5, .72))],
    rear=[("cargo", rect(0, 1, .25, 1)), ("dark", rect(.49, .51, .27, .98)),
          ("dark", rect(.05, .95, .12, .25)), ("rubber" + MIRROR, rect(.05, .3, 0, .17)),
          ("tail" + MIRROR, rect(.03, .14, .14, .21))],
    front=[("cargo", rect(0, 1, .7, 1)), ("paint", rect(.02, .98, .15, .75)),
           ("glass", rect(.06, .94, .45, .72)), ("dark", rect(.25, .75, .2, .4)),
           ("rubber" + MIRROR, rect(.05, .2, 0, .15)), ("head" + MIRROR, rect(.05, .2, .22, .3))],
    head=(.12, .26), tail=(.08, .18))
BUS_SPEC = dict(
    dims=((2.45, 2.55), (3.0, 3.35), (10.5, 13.5)), wheels=((0.2, 0.5), (0.8, 0.5)),
    side=[("paint", rect(0, 1, .1, 1)), ("glass", rect(.03, .97, .42, .86)),
          ("dark", rect(0, 1, .08, .15)), ("glass", rect(.84, .91, .15, .86))],
    rear=[("paint", rect(0, 1, .1, 1)), ("glass", rect(.1, .9, .55, .85)),
          ("dark", rect(0, 1, .06, .14)), ("rubber" + MIRROR, rect(.05, .22, 0, .1)),
          ("tail" + MIRROR, rect(.03, .12, .15, .27))],
    front=[("paint", rect(0, 1, .1, 1)), ("glass", rect(.05, .95, .35, .88)),
           ("display", rect(.15, .85, .89, .97)), ("dark", rect(0, 1, .06, .14)),
           ("rubber" + MIRROR, rect(.05, .22, 0, .1)), ("head" + MIRROR, rect(.04, .16, .14, .22))],
    head=(.1, .18), tail=(.07, .21))
TRAM_SPEC = dict(  # Cityscapes' 'train' class covers trams
    dims=((2.3, 2.45), (3.3, 3.6), (24.0, 32.0)), wheels=((0.1, 0.35), (0.5, 0.35), (0.9, 0.35)),
    side=[("paint", rect(0, 1, .1, .92)), ("glass", rect(.02, .98, .4, .8)),
          ("dark", rect(0, 1, .08, .14)), ("cargo", rect(0, 1, .88, .95))],
    rear=[("paint", [(0, .1), (1, .1), (1, .85), (.85, .95), (.15, .95), (0, .85)]),
          ("glass", rect(.08, .92, .4, .85)), ("tail" + MIRROR, rect(.04, .14, .18, .26)),
          ("dark", rect(.3, .7, .95, 1.0))],
    front=[("paint", [(0, .1), (1, .1), (1, .85), (.85, .95), (.15, .95), (0, .85)]),
           ("glass", rect(.06, .94, .38, .86)), ("display", rect(.25, .75, .87, .93)),
           ("head" + MIRROR, rect(.04, .15, .16, .24)), ("dark", rect(.3, .7, .95, 1.0))],
    head=(.1, .2), tail=(.09, .22))
VEHICLES = {CAR: CAR_SPEC, TRUCK: TRUCK_SPEC, BUS: BUS_SPEC, TRAIN: TRAM_SPEC}

PAINTS = [(235, 235, 232), (25, 25, 28), (160, 162, 165), (95, 98, 102), (30, 45, 90),
          (150, 25, 25), (40, 90, 160), (40, 80, 50), (200, 185, 150)]
PAINT_WEIGHTS = [5, 5, 5, 4, 2, 2, 2, 1, 1]
BUS_PAINTS = [(230, 200, 40), (200, 40, 35), (30, 90, 170), (225, 225, 220), (40, 130, 70)]


def vehicle(rng, spec_label, xc, z0, facing, lights_on) -> tuple[list[Prim], list[Light], float]:
    """A car/truck/bus/tram at lateral centre ``xc`` whose near end is at depth ``z0``.

    ``facing`` is "rear" (driving away: tail lights) or "front" (oncoming: head lights).
    Returns the prims (side first, then the near face), its lights and its length.
    """
    spec = VEHICLES[spec_label]
    (w0, w1), (h0, h1), (l0, l1) = spec["dims"]
    w, h, length = rng.uniform(w0, w1), rng.uniform(h0, h1), rng.uniform(l0, l1)
    paint_src = BUS_PAINTS if spec_label in (BUS, TRAIN) else PAINTS
    paint = jitter(rng, pick(rng, paint_src, None if paint_src is BUS_PAINTS else PAINT_WEIGHTS), .08)
    cargo = jitter(rng, pick(rng, [(220, 220, 215), (180, 40, 30), (60, 90, 150), (200, 200, 200)]), .1)
    on = 1.0 if lights_on else 0.0
    roles = {  # role -> (material, day albedo, night emission)
        "paint": (M_PAINT, paint, None), "cargo": (M_PAINT, cargo, None),
        "glass": (M_GLASS, lin((45, 55, 65)), None), "dark": (M_METAL, lin((35, 35, 38)), None),
        "rubber": (M_RUBBER, lin((22, 22, 22)), None), "plate": (M_SIGN, lin((225, 225, 215)), None),
        "tail": (M_LAMP, lin((170, 20, 20)), (2.0 * on, 0.05 * on, 0.03 * on)),
        "head": (M_LAMP, lin((225, 225, 215)), (9.0 * on, 8.5 * on, 7.0 * on)),
        "display": (M_LAMP, lin((40, 40, 40)), (1.6 * on, 0.8 * on, 0.1 * on)),
    }
    x0 = xc - w / 2
    prims: list[Prim] = []
    t_to_z = (lambda t: z0 + t * length) if facing == "rear" else (lambda t: z0 + (1 - t) * length)
    if abs(xc) > w / 2 + 0.2:  # the side facing the camera's axis is visible
        sx = x0 if xc > 0 else x0 + w
        for role, poly in spec["side"]:
            mat, rgb, emit = roles[role]
            prims.append(face_x([(t_to_z(t), y * h) for t, y in poly], sx, spec_label, mat, rgb, emit))
        for t, r in spec["wheels"]:
            circle = ellipse(t_to_z(t), r, r, r, 12)
            prims.append(face_x(circle, sx, spec_label, M_RUBBER, roles["rubber"][1]))
            prims.append(face_x(ellipse(t_to_z(t), r, .45 * r, .45 * r, 8), sx, spec_label, M_METAL,
                                lin((120, 120, 125))))
    for role, poly in spec[facing]:
        mirror = role.endswith(MIRROR)
        mat, rgb, emit = roles[role.removesuffix(MIRROR)]
        polys = [poly, [(1 - s, y) for s, y in poly]] if mirror else [poly]
        for p in polys:
            prims.append(face_z([(x0 + s * w, y * h) for s, y in p], z0, spec_label, mat, rgb, emit))
    lights = []
    if lights_on:
        s, y = spec["head" if facing == "front" else "tail"]
        if facing == "front":  # both low beams as one cone towards the camera, tilted to the road
            lights.append(Light((xc, y * h, z0 - .05), (70, 66, 56), (0, -0.08, -1), np.cos(np.radians(32)),
                                reflect=False, near=8, cutoff=.3))
        for side in (s, 1 - s):  # what the camera sees: two glowing lamps (and their reflections)
            rgb = (30, 28, 24) if facing == "front" else (1.2, 0.04, 0.02)
            lights.append(Light((x0 + side * w, y * h, z0 - 0.05), rgb, illum=False))
    return prims, lights, length

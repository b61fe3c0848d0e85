"""Rasterize a street layout into a G-buffer (label, albedo, normals, positions, night emission).

Deferred shading: every pixel gets its class, linear albedo, surface normal, world position and
night emission once; ``day.render_day`` and ``night.render_night`` light the
same buffer, so day and night of one scene share their label exactly. The road plane is classified
per pixel analytically (exact perspective for lanes, markings and paving); objects are polygons in
planes drawn in painter's order (far first) with OpenCV into an id buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nightseg.data.synthetic.layout import Layout
from nightseg.data.synthetic.objects import (
    IGNORE,
    M_ASPHALT,
    M_DIRT,
    M_FACADE,
    M_FENCE,
    M_FOLIAGE,
    M_GLASS,
    M_GRASS,
    M_PAINT,
    M_PAVING,
    M_SKY,
    PLANE_GROUND,
    PLANE_X,
    PLANE_Z,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    Prim,
    lin,
)

Z_NEAR, Z_SKY = 0.3, 1e4
SHIFT = 3  # OpenCV sub-pixel bits for polygon vertices
# Noise amplitude per material: (per pixel, ~4 px blobs, ~16 px patches); indexed by material id.
MATERIAL_NOISE = np.array([
    (0, 0, 0), (.06, .05, .12), (.05, .04, .08), (.1, .15, .2), (.03, .04, .1), (.03, .05, .1),
    (.05, .05, .05), (.03, .02, .03), (.16, .25, .12), (.1, .1, .05), (.015, .02, .03), (.02, .03, .06),
    (.04, .02, .02), (.05, .05, .04), (.03, .02, .02), (0, 0, 0), (.01, .01, .02), (.08, .12, .2),
], dtype=np.float32)
# Ground "parts" 0..4 precede the objects in the id buffer: sky, road, sidewalk, grass, dirt.
GROUND_PARTS = [(SKY, M_SKY), (ROAD, M_ASPHALT), (SIDEWALK, M_PAVING), (TERRAIN, M_GRASS), (TERRAIN, M_DIRT)]


@dataclass(frozen=True)
class PixelCamera:
    """The layout's pinhole camera at one image size (pixels; world y up, ground at y = 0)."""
    focal: float
    cx: float
    horizon: float
    height: float

    def project(self, p) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> pixel (u, v); depths are clamped to the near plane."""
        p = np.asarray(p, dtype=np.float64)
        z = np.maximum(p[..., 2], Z_NEAR)
        return self.cx + self.focal * p[..., 0] / z, self.horizon - self.focal * (p[..., 1] - self.height) / z


@dataclass
class GBuffer:
    """Per-pixel scene attributes (H, W[, 3]) shared by the day and night renderers."""
    cam: PixelCamera
    label: np.ndarray     # uint8 train ids, 255 = ignore (ego vehicle)
    mat: np.ndarray       # uint8 material ids
    albedo: np.ndarray    # float32 linear RGB
    normal: np.ndarray    # float32 unit normals
    pos: np.ndarray       # float32 world x, y, z (sky at Z_SKY)
    emit: np.ndarray      # float32 night emission (lamps, lit windows and shop fronts)
    glass: np.ndarray     # float32 0..1 share of glass (reflects the sky by day)
    ground: np.ndarray    # bool, pixel on the road plane
    sky: np.ndarray       # bool
    ao: np.ndarray        # float32 ambient occlusion under vehicles (1 = open)
    coarse: np.ndarray    # float32 low-frequency noise (clouds)

    def project(self, p) -> tuple[np.ndarray, np.ndarray]:
        return self.cam.project(p)


def white_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Zero-mean, unit-variance float32 noise (triangular: sum of two uniform bytes), ~20x faster
    than rng.standard_normal and indistinguishable as texture grain or sensor noise."""
    n = int(np.prod(shape))
    b = np.frombuffer(rng.bytes(2 * n), np.uint8)
    return ((b[:n].astype(np.float32) + b[n:] - np.float32(255)) * np.float32(1 / 104.4)).reshape(shape)


def _noise(rng, shape, step) -> np.ndarray:
    """Smooth noise with features of ~``step`` pixels (bicubic upsampling of white noise)."""
    h, w = shape
    small = white_noise(rng, (h // step + 2, w // step + 2))
    big = cv2.resize(small, (w + 2 * step, h + 2 * step), interpolation=cv2.INTER_CUBIC)
    return big[step:step + h, step:step + w]


def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a planar polygon against z >= Z_NEAR."""
    out = []
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        ina, inb = a[2] >= Z_NEAR, b[2] >= Z_NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (Z_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _draw(ids: np.ndarray, prims: list[Prim], first_id: int, cam: PixelCamera) -> None:
    """Fill each prim's polygon with its part id (later prims cover earlier ones)."""
    h, w = ids.shape
    f, cx, hor, ch = cam.focal, cam.cx, cam.horizon, cam.height
    counts = np.fromiter((len(p.pts) for p in prims), np.int64, len(prims))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    allp = np.concatenate([p.pts for p in prims])
    z = np.maximum(allp[:, 2], Z_NEAR)
    u = np.clip(cx + f * allp[:, 0] / z, -1e5, 1e5)
    v = np.clip(hor - f * (allp[:, 1] - ch) / z, -1e5, 1e5)
    clip = np.minimum.reduceat(allp[:, 2], starts) < Z_NEAR
    off = ((np.maximum.reduceat(u, starts) < -2) | (np.minimum.reduceat(u, starts) > w + 2)
           | (np.maximum.reduceat(v, starts) < -2) | (np.minimum.reduceat(v, starts) > h + 2))
    scale = 1 << SHIFT
    q_all = np.round(np.column_stack([u - .5, v - .5]) * scale).astype(np.int32)  # pixel centres at +.5
    zmean = np.add.reduceat(z, starts) / counts
    for k in np.flatnonzero(~off | clip):
        p = prims[k]
        if clip[k]:
            if p.thick:
                continue  # thin things crossing the camera plane are not worth clipping
            c = _clip_near(p.pts)
            if len(c) < 3:
                continue
            q = np.round(np.column_stack([cx + f * c[:, 0] / c[:, 2] - .5,
                                          hor - f * (c[:, 1] - ch) / c[:, 2] - .5]) * scale).astype(np.int32)
        else:
            q = q_all[starts[k]:starts[k] + counts[k]]
        if p.thick:
            t = max(1, int(round(p.thick * f / zmean[k])))
            cv2.polylines(ids, [q], False, first_id + int(k), thickness=t, lineType=cv2.LINE_8, shift=SHIFT)
        else:
            cv2.fillPoly(ids, [q], first_id + int(k), lineType=cv2.LINE_8, shift=SHIFT)


def _cell_hash(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) value per window cell (integer hash), so lit windows are stable."""
    i, j, seed = i.astype(np.int64), j.astype(np.int64), seed.astype(np.int64)
    h = (i * 374761393 + j * 668265263 + seed * 97) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 0xFFFFFF).astype(np.float32) / float(1 << 24)


def _windows(gb: GBuffer, sel: np.ndarray, win: np.ndarray, axis: np.ndarray, top: np.ndarray) -> None:
    """Windows on facade pixels ``sel`` (flat indices) from their world position, anti-aliased
    towards the average window share once a window spans less than ~2 pixels."""
    pos = gb.pos.reshape(-1, 3)[sel]
    s = np.where(axis == PLANE_X, pos[:, 2], pos[:, 0])
    y = pos[:, 1]
    ps, py, fs, fy, y0, lit, seed, shop = win.T
    cs, cy = s / ps, (y - y0) / py
    i, j = np.floor(cs), np.floor(cy)
    inside = (np.abs(cs - i - .5) < fs / 2) & (np.abs(cy - j - .45) < fy / 2) & (y > y0) & (y < top - .8)
    shop_win = (shop > 0) & (y < y0 - .5) & (y > .3) & (np.abs(cs / 2 - np.floor(cs / 2) - .5) < .42)
    inside |= shop_win
    footprint = pos[:, 2] / gb.cam.focal
    sharp = np.clip(2.0 - footprint * 4 / ps, 0, 1)
    share = np.where(y > y0, fs * fy, 0.0)
    w = sharp * inside + (1 - sharp) * share
    r = _cell_hash(i, j, seed)
    on = np.where(shop_win, shop, r < lit).astype(np.float32)
    warm = np.where(_cell_hash(j, i, seed + 7) < 0.75, 1.0, 0.0)[:, None]
    colour = warm * np.array([1.0, .68, .36], np.float32) + (1 - warm) * np.array([.62, .75, 1.0], np.float32)
    level = (0.12 + 0.3 * r)[:, None] * np.where(shop_win, 1.6, 1.0)[:, None]
    emit = colour * level * (sharp * inside * on + (1 - sharp) * share * lit)[:, None]
    albedo = gb.albedo.reshape(-1, 3)
    glass_rgb = np.array(lin((40, 48, 58)), np.float32)
    albedo[sel] = albedo[sel] * (1 - w[:, None]) + glass_rgb * w[:, None]
    gb.glass.reshape(-1)[sel] = w
    gb.emit.reshape(-1, 3)[sel] += emit.astype(np.float32)
    floor_line = (np.abs(cy - np.round(cy)) * py < .12) & (y > y0 - .2) & (sharp > 0)
    albedo[sel[floor_line]] *= 0.8


def _ground(layout: Layout, cam: PixelCamera, u: np.ndarray, v: np.ndarray, coarse: np.ndarray):
    """Classify road-plane pixels (below the horizon) into ground parts 1..4 (0 = sky above it).

    Returns (part ids, marking coverage 0..1, albedo multiplier for paving joints and curbs,
    ground depth Z), all in exact perspective from the camera model.
    """
    g = layout.ground
    shape = coarse.shape
    rows = v[:, 0] > cam.horizon + 0.3
    z = np.full(v.shape[0], Z_SKY, np.float32)
    z[rows] = cam.focal * cam.height / (v[rows, 0] - cam.horizon)
    Z = np.ascontiguousarray(np.broadcast_to(z[:, None], shape))
    X = (u - cam.cx) * Z / cam.focal
    # Behind the building lines (seen through gaps): one ground per side, grass/dirt or paving.
    lot = [3 if terrain else 2 for terrain in g.lot_terrain]
    part = np.where(X < 0, lot[0], lot[1]).astype(np.uint16)
    part[(part == 3) & (coarse > 1.0)] = 4
    for x0, x1, cls in g.bands:
        inb = (X >= x0) & (X < x1)
        part[inb] = 2 if cls == SIDEWALK else np.where(coarse[inb] > 0.9, 4, 3)
    if g.cross:
        near = ((Z > g.cross[0] - 3) & (Z < g.cross[0])) | ((Z > g.cross[1]) & (Z < g.cross[1] + 3))
        part[near & ((X < g.line[0]) | (X > g.line[1]))] = 2
    on_road = (X >= g.road[0]) & (X <= g.road[1])
    in_cross = np.zeros(shape, bool)
    if g.cross:
        in_cross = (Z >= g.cross[0]) & (Z <= g.cross[1])
        on_road |= in_cross
    part[on_road] = 1
    part[~rows] = 0
    fp = Z / cam.focal  # metres per pixel on the ground: anti-aliases thin paint
    cov = np.zeros(shape, np.float32)
    for x, period, duty in g.markings:
        c = np.clip((.07 - np.abs(X - x)) / fp + .5, 0, 1)
        if period:
            c = c * ((Z / period) % 1.0 < duty)
        cov = np.maximum(cov, c * ~in_cross)
    if g.crosswalk:
        zc = (Z >= g.crosswalk[0]) & (Z <= g.crosswalk[1]) & on_road
        stripe = np.clip((.3 - np.abs((X / 1.1) % 1.0 - .5) * 1.1) / fp + .5, 0, 1)
        cov = np.maximum(cov, stripe * zc)
    # Paving joints (faded once a joint is far below a pixel) and light curb stones on sidewalks.
    gmod = np.ones(shape, np.float32)
    walk = part == 2
    joints = np.minimum(np.abs((X[walk] / .6) % 1 - .5), np.abs((Z[walk] / .6) % 1 - .5)) > .44
    gmod[walk] = 1 - .3 * joints * np.clip(1.2 - fp[walk] / .06, 0, 1)
    curb = walk & ((np.abs(X - g.road[0]) < .18) | (np.abs(X - g.road[1]) < .18))
    gmod[curb] = 1.3
    cov *= part == 1
    return part, cov, gmod, Z


def _part_tables(layout: Layout, prims: list[Prim]) -> dict[str, list]:
    """One row per id-buffer value: the ground parts, then every prim in drawing order."""
    n = len(GROUND_PARTS)
    col = layout.ground.colours
    return {
        "label": [lbl for lbl, _ in GROUND_PARTS] + [p.label for p in prims],
        "mat": [m for _, m in GROUND_PARTS] + [p.mat for p in prims],
        "rgb": [(0, 0, 0), col["road"], col["sidewalk"], col["grass"], col["dirt"]] + [p.rgb for p in prims],
        "emit": [(0, 0, 0)] * n + [p.emit or (0, 0, 0) for p in prims],
        "normal": [(0, 1, 0)] * n + [p.normal for p in prims],
        "axis": [PLANE_GROUND] * n + [p.axis for p in prims],
        "plane": [0.0] * n + [p.plane for p in prims],
        "win": [(0,) * 8] * n + [p.win or (0,) * 8 for p in prims],
        "top": [0.0] * n + [float(p.pts[:, 1].max()) for p in prims],
    }


def _draw_hood(ids: np.ndarray, hood: tuple, tables: dict[str, list]) -> None:
    """The ego vehicle's bonnet along the bottom edge, labelled ignore as in Cityscapes."""
    rows, cols = ids.shape
    hh, bulge, rgb = hood
    xs = np.linspace(0, cols, 17)
    ys = rows * (1 - hh + bulge * (2 * xs / cols - 1) ** 2)
    poly = np.column_stack([np.r_[xs, cols, 0], np.r_[ys, rows + 1, rows + 1]])
    cv2.fillPoly(ids, [np.round(poly * (1 << SHIFT)).astype(np.int32)], len(tables["label"]), shift=SHIFT)
    for key, value in (("label", IGNORE), ("mat", M_PAINT), ("rgb", lin(rgb)), ("emit", (0, 0, 0)),
                       ("normal", (0, .9, -.44)), ("axis", PLANE_Z), ("plane", 1.0), ("win", (0,) * 8),
                       ("top", 0.0)):
        tables[key].append(value)


def _contact_shadows(layout: Layout, cam: PixelCamera, shape) -> np.ndarray:
    """Ambient occlusion of the road under and just around vehicle-sized casters (1 = open)."""
    occl = np.zeros(shape, np.float32)
    for c in layout.casters:
        if c[0] == "box" and c[5] < 4 and c[4] > Z_NEAR:
            x0, x1, z0, z1 = c[1] - .15, c[2] + .15, max(c[3], Z_NEAR + .2), c[4]
            uu, vv = cam.project(np.array([(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)]))
            quad = np.round(np.column_stack([uu, vv]) * (1 << SHIFT)).astype(np.int32)
            cv2.fillConvexPoly(occl, quad, 1.0, shift=SHIFT)
    return 1 - .6 * cv2.GaussianBlur(occl, (0, 0), max(shape[1] / 256, 0.6))


def rasterize(layout: Layout, rows: int, cols: int, rng: np.random.Generator) -> GBuffer:
    """Draw ``layout`` at ``rows`` x ``cols``; ``rng`` only drives the texture noise."""
    c = layout.camera
    cam = PixelCamera(c.focal * cols, c.cx * cols, c.horizon * rows, c.height)
    shape = (rows, cols)
    fine, mid, coarse = white_noise(rng, shape), _noise(rng, shape, 4), _noise(rng, shape, 16)
    u = (np.arange(cols, dtype=np.float32) + .5)[None, :]
    v = (np.arange(rows, dtype=np.float32) + .5)[:, None]
    ids, cov, gmod, ground_z = _ground(layout, cam, u, v, coarse)
    # Painter's order: by band (outside-in), then far to near within a band.
    order = sorted(range(len(layout.objects)), key=lambda i: (layout.objects[i][0], -layout.objects[i][1]))
    prims = [p for i in order for p in layout.objects[i][2]]
    if prims:
        _draw(ids, prims, len(GROUND_PARTS), cam)
    tables = _part_tables(layout, prims)
    if layout.hood is not None:
        _draw_hood(ids, layout.hood, tables)

    def lookup(key, dtype):  # np.take is ~4x faster than fancy indexing here
        return np.take(np.asarray(tables[key], dtype), ids, axis=0)

    label, mat, axis, plane = (lookup("label", np.uint8), lookup("mat", np.uint8), lookup("axis", np.uint8),
                               lookup("plane", np.float32))
    sky = ids == 0
    ground = (axis == PLANE_GROUND) & ~sky
    # Depth from each part's plane, then the world position of every pixel.
    du = np.broadcast_to(u - cam.cx, shape)
    Z = np.where(axis == PLANE_Z, plane, ground_z)
    side = axis == PLANE_X
    du_side = np.where(np.abs(du[side]) < 1e-3, 1e-3, du[side])  # a side plane seen edge-on
    Z[side] = np.clip(cam.focal * plane[side] / du_side, Z_NEAR, Z_SKY)
    Z[sky] = Z_SKY
    pos = np.empty(shape + (3,), np.float32)
    pos[..., 0], pos[..., 2] = du * Z / cam.focal, Z
    pos[..., 1] = np.where(ground, 0.0, cam.height - (v - cam.horizon) * Z / cam.focal)
    gb = GBuffer(cam, label, mat, lookup("rgb", np.float32), lookup("normal", np.float32), pos,
                 lookup("emit", np.float32), (mat == M_GLASS) * np.float32(.8), ground, sky,
                 np.where(ground, _contact_shadows(layout, cam, shape), 1.0).astype(np.float32), coarse)
    _texture(gb, layout, ids, tables, (fine, mid, coarse), cov, np.where(ground, gmod, 1.0), side)
    return gb


def _texture(gb: GBuffer, layout: Layout, ids, tables, noise, cov, gmod, side) -> None:
    """Procedural surface detail: per-material noise, road paint and rails, foliage, fence bars,
    facade windows (in place on ``gb``)."""
    fine, mid, coarse = noise
    amp = MATERIAL_NOISE[gb.mat]
    tex = 1 + amp[..., 0] * fine + amp[..., 1] * mid + amp[..., 2] * coarse
    albedo = gb.albedo * (np.clip(tex, 0.2, 2.0) * gmod)[..., None]
    paint = (cov * gb.ground)[..., None]
    albedo = albedo * (1 - paint) + np.asarray(layout.ground.colours["marking"], np.float32) * paint
    road = gb.ground & (gb.label == ROAD)
    for rx in layout.ground.rails:
        c = (np.clip((.05 - np.abs(gb.pos[..., 0] - rx)) / (gb.pos[..., 2] / gb.cam.focal) + .5, 0, 1) * road)
        albedo = albedo * (1 - c[..., None]) + np.float32(.2) * c[..., None]
    leaf = gb.mat == M_FOLIAGE  # hue varies across a crown; dark gaps between leaves
    albedo[leaf] *= ((1 + .25 * mid[leaf, None] * np.array([.6, 1, -.4], np.float32))
                     * np.where(fine[leaf] > 1.3, .45, 1.0)[:, None])
    fence = gb.mat == M_FENCE
    p = gb.pos[fence]
    bars = ((np.where(side[fence], p[:, 2], p[:, 0]) / .14) % 1 < .4) | (np.abs(p[:, 1] % 1.1 - .05) < .06)
    albedo[fence] *= np.where(bars, 1.0, 0.45)[:, None]
    gb.albedo = np.ascontiguousarray(albedo, dtype=np.float32)
    win = np.asarray(tables["win"], np.float32)
    facade = np.flatnonzero((gb.mat == M_FACADE) & (win[ids, 0] > 0))
    if facade.size:
        pid = ids.reshape(-1)[facade]
        _windows(gb, facade, win[pid], np.asarray(tables["axis"], np.uint8)[pid],
                 np.asarray(tables["top"], np.float32)[pid])


def sky_height(gb: GBuffer) -> np.ndarray:
    """(H, 1) elevation proxy for sky gradients: 0 at the horizon row, 1 at the top of the image."""
    rows = np.arange(gb.label.shape[0], dtype=np.float32)[:, None] + .5
    return np.clip((gb.cam.horizon - rows) / max(gb.cam.horizon, 1), 0, 1)


_GAMMA_LUT = (np.linspace(0, 1, 4096, dtype=np.float32) ** (1 / 2.2) * 255 + .5).astype(np.float32)


def finish(rad: np.ndarray, rng: np.random.Generator, noise: float, read: float = 0.0) -> np.ndarray:
    """Camera: soft highlight roll-off, shot + read noise, sRGB gamma, slight optical blur, uint8."""
    x = 1 - np.exp(np.float32(-1.6) * np.maximum(rad, 0))
    n = white_noise(rng, x.shape)
    n *= np.float32(noise)
    x += np.sqrt(x) * n
    if read:
        x += white_noise(rng, x.shape[:2])[..., None] * np.float32(read)
    x = _GAMMA_LUT[(np.clip(x, 0, 1) * 4095).astype(np.int32)]
    x = cv2.GaussianBlur(x, (3, 3), 0.5)
    return np.clip(x, 0, 255).astype(np.uint8)

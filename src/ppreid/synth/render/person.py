"""Paints one pedestrian (PIL ImageDraw polygons on an RGBA layer) from an identity's look and a pose.

The look (:class:`PersonLook`: words resolved to colours and proportions) and the pose (:class:`Pose`)
come from :mod:`ppreid.synth.render.appearance`; the head, hair, hat and glasses from the
:class:`~ppreid.synth.render.head.HeadPainter` mixin, the garments, legs and shoes from the
:class:`~ppreid.synth.render.clothes.ClothesPainter` mixin. Here: the body's geometry, the painting order
and the bags. Shapes are in units of the person's height ``P`` in pixels; ``left`` means the camera sees the
person's left side (the person faces image-left).
"""

from __future__ import annotations

import math

from PIL import Image

from ppreid.synth.render.appearance import PersonLook, Pose
from ppreid.synth.render.clothes import ClothesPainter
from ppreid.synth.render.draw import Draw
from ppreid.synth.render.draw import fill_rgba as _fill
from ppreid.synth.render.draw import lerp as _lerp
from ppreid.synth.render.head import HeadPainter
from ppreid.synth.render.tables import RGB


class PersonPainter(ClothesPainter, HeadPainter):
    """Paints ``look`` in ``pose`` into an RGBA image; box = (centre x, top y, height P) in pixels.
    After :meth:`paint`, ``shoe_boxes`` holds each shoe's box (the renderer checks whether they show)."""

    def __init__(
        self, img: Image.Image, look: PersonLook, pose: Pose, cx: float, top: float, P: float, shade: float = 1.0
    ) -> None:
        self.img, self.d = img, Draw(img)
        self.L, self.pose, self.cx, self.y0, self.P, self.k = look, pose, cx, top, P, shade
        self.f = pose.facing
        L, P = look, P
        self.hh = L.head_h * P
        self.hw = self.hh * L.head_w * (1.1 if self.f else 1.0)
        self.shoulder_y = top + self.hh + 0.028 * P
        self.waist_y = top + 0.42 * P
        self.hip_y = top + L.hip_y * P
        self.ankle_y = top + 0.945 * P
        self.shoe_boxes: list[tuple[float, float, float, float]] = []  # (x0, y0, x1, y1) of each shoe drawn
        self.sw = L.shoulder * P * (0.52 if self.f else 1.0)
        self.arm_w = 0.048 * P * L.limb
        self.thigh_w = 0.078 * P * L.limb
        self.ankle_w = 0.042 * P * math.sqrt(L.limb)
        self.hcx = cx + pose.lean * P + self.f * 0.012 * P

    def c(self, rgb: RGB, k: float = 1.0):
        return _fill(rgb, k * self.k)

    # ---- geometry -------------------------------------------------------------------------------
    def legs(self) -> list[tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]]:
        """[(hip, knee, ankle, depth shade)], far leg first."""
        P, pose = self.P, self.pose
        leg_len = self.ankle_y - self.hip_y
        if self.f == 0:
            out = []
            for s in (-1, 1):
                hip = (self.cx + s * self.L.hip * P * 0.5, self.hip_y)
                ankle = (hip[0] + s * (pose.arm_spread * 0.12 * P), self.ankle_y - max(0.0, s * pose.foot_lift) * P)
                knee = _lerp(hip, ankle, 0.5)
                out.append((hip, knee, ankle, 1.0))
            return out
        out = []
        for s, shade in ((-1, 0.78), (1, 1.0)):
            a = s * pose.stride
            hip = (self.cx - self.f * 0.01 * P, self.hip_y)
            ankle = (hip[0] + self.f * math.sin(a) * leg_len, hip[1] + math.cos(a) * leg_len)
            knee = _lerp(hip, ankle, 0.5)
            knee = (knee[0] + self.f * 0.012 * P * (1 if a < 0 else 0.3), knee[1])
            out.append((hip, knee, ankle, shade))
        return out

    def arms(self) -> list[tuple[tuple[float, float], tuple[float, float], tuple[float, float], float, int]]:
        """[(shoulder, elbow, wrist, depth shade, side)], far arm first (side = -1 left, +1 right)."""
        P, pose = self.P, self.pose
        ua, fa = 0.17 * P, 0.155 * P
        if self.f == 0:
            out = []
            for s in (-1, 1):
                sh = (self.cx + s * (self.L.shoulder * P - self.arm_w * 0.45), self.shoulder_y + self.arm_w * 0.35)
                sp = pose.arm_spread
                el = (sh[0] + s * math.sin(sp) * ua, sh[1] + math.cos(sp) * ua)
                fshort = math.cos(pose.arm_swing * s * 2.0)
                wr = (el[0] + s * math.sin(sp * 0.4) * fa, el[1] + math.cos(sp * 0.4) * fa * fshort)
                out.append((sh, el, wr, 1.0, s))
            return out
        out = []
        for s, shade in ((1, 0.78), (-1, 1.0)):
            phi = s * pose.arm_swing
            sh = (self.cx + self.f * 0.005 * P, self.shoulder_y + self.arm_w * 0.4)
            el = (sh[0] + self.f * math.sin(phi) * ua, sh[1] + math.cos(phi) * ua)
            phf = phi + pose.elbow
            wr = (el[0] + self.f * math.sin(phf) * fa, el[1] + math.cos(phf) * fa)
            out.append((sh, el, wr, shade, s))
        return out

    # ---- parts -----------------------------------------------------------------------------------
    def paint(self) -> None:
        view, w = self.pose.view, self.L.words
        legs, arms = self.legs(), self.arms()
        if self.f:
            self._arm(arms[0])
            self._leg(legs[0])
            if w["bag"] == "backpack":
                self._backpack_side()
            self._leg(legs[1])
        else:
            if w["hair_style"] == "long" and view == "front":
                self._long_hair_behind()
            if w["upper_type"] == "hoodie" and view == "front":
                self._hood(behind=True)
            for leg in legs:
                self._leg(leg)
        self._skirt(legs)
        self._torso()
        if self.f:
            self._arm(arms[1])
        else:
            for arm in arms:
                self._arm(arm)
        if view == "back":
            if w["upper_type"] == "hoodie":
                self._hood(behind=False)
            if w["bag"] == "backpack":
                self._backpack_back()
        self._head()
        if view == "back" and w["hair_style"] == "long":
            self._long_hair_back()
        self._bags(arms)

    def _backpack_back(self) -> None:
        P, cx, L = self.P, self.cx, self.L
        w = L.shoulder * P * 0.75
        top, bottom = self.shoulder_y + 0.03 * P, self.shoulder_y + 0.27 * P
        self.d.rounded_rectangle([cx - w, top, cx + w, bottom], radius=w * 0.3, fill=self.c(L.bag))
        self.d.rounded_rectangle(
            [cx - w * 0.65, top + (bottom - top) * 0.5, cx + w * 0.65, bottom - 0.01 * P],
            radius=w * 0.15,
            fill=self.c(L.bag, 0.8),
        )

    def _backpack_side(self) -> None:
        P, cx, f = self.P, self.cx, self.f
        x0 = cx - f * self.sw * 0.85
        x1 = x0 - f * 0.07 * P
        top, bottom = self.shoulder_y + 0.03 * P, self.shoulder_y + 0.26 * P
        self.d.rounded_rectangle([min(x0, x1), top, max(x0, x1), bottom], radius=0.02 * P, fill=self.c(self.L.bag))
        self.d.line(
            [(cx - f * self.sw * 0.2, self.shoulder_y), (cx - f * self.sw * 0.1, self.shoulder_y + 0.16 * P)],
            fill=self.c(self.L.bag, 0.8),
            width=max(1, int(P * 0.014)),
        )

    def _bags(self, arms) -> None:
        bag, P, L = self.L.words["bag"], self.P, self.L
        if bag == "handbag":
            arm = arms[-1] if self.f else (arms[0] if L.bag_side < 0 else arms[1])
            if self.f == 0 and self.pose.view == "back":
                arm = arms[1] if L.bag_side < 0 else arms[0]
            wx, wy = arm[2]
            s = 0.05 * P
            self.d.line([(wx, wy), (wx - s * 0.5, wy + s * 0.6)], fill=self.c(L.bag, 0.7), width=max(1, int(P * 0.008)))
            self.d.line([(wx, wy), (wx + s * 0.5, wy + s * 0.6)], fill=self.c(L.bag, 0.7), width=max(1, int(P * 0.008)))
            self.d.polygon(
                [
                    (wx - s * 0.8, wy + s * 0.55),
                    (wx + s * 0.8, wy + s * 0.55),
                    (wx + s, wy + s * 1.7),
                    (wx - s, wy + s * 1.7),
                ],
                fill=self.c(L.bag),
            )
        elif bag == "shoulder_bag":
            side = L.bag_side if self.pose.view != "back" else -L.bag_side
            strap = self.c(L.bag, 0.75)
            if self.f == 0:
                x_sh = self.cx - side * L.shoulder * P * 0.6
                x_bag = self.cx + side * L.hip * P * 1.05
                self.d.line(
                    [(x_sh, self.shoulder_y), (x_bag, self.hip_y - 0.03 * P)], fill=strap, width=max(1, int(P * 0.012))
                )
            else:
                x_bag = self.cx + self.f * 0.01 * P
                self.d.line(
                    [(self.cx, self.shoulder_y), (x_bag, self.hip_y - 0.03 * P)],
                    fill=strap,
                    width=max(1, int(P * 0.012)),
                )
            s = 0.06 * P
            self.d.rounded_rectangle(
                [x_bag - s * 0.8, self.hip_y - 0.05 * P, x_bag + s * 0.8, self.hip_y + 0.05 * P],
                radius=s * 0.2,
                fill=self.c(L.bag),
            )

//! Plane geometry for text boxes: convex hulls, minimum-area rectangles, corner order, and the
//! projective map that straightens a quadrilateral.

/// A point `[x, y]` in pixels; pixel `(i, j)` has its centre at `[i, j]` (OpenCV's convention,
/// which PP-OCR's post-processing assumes).
pub type Point = [f64; 2];

/// A rectangle at any angle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RotatedRect {
    pub center: Point,
    /// Unit vector along the first side.
    pub axis: Point,
    /// Lengths of the side along `axis` and of the side across it.
    pub size: [f64; 2],
}

impl RotatedRect {
    pub fn short_side(&self) -> f64 {
        self.size[0].min(self.size[1])
    }

    pub fn area(&self) -> f64 {
        self.size[0] * self.size[1]
    }

    pub fn perimeter(&self) -> f64 {
        2.0 * (self.size[0] + self.size[1])
    }

    /// The rectangle grown by `by` on every side. This is exactly the minimum-area rectangle of
    /// the rounded polygon offset (Clipper's `JT_ROUND`) that PP-OCR's "unclip" computes: the
    /// rounded corners never reach past the straight sides.
    pub fn expanded(&self, by: f64) -> RotatedRect {
        RotatedRect { size: [self.size[0] + 2.0 * by, self.size[1] + 2.0 * by], ..*self }
    }

    pub fn corners(&self) -> [Point; 4] {
        let [ux, uy] = self.axis;
        let (hw, hh) = (self.size[0] / 2.0, self.size[1] / 2.0);
        let [cx, cy] = self.center;
        let at = |a: f64, b: f64| [cx + a * ux - b * uy, cy + a * uy + b * ux];
        [at(-hw, -hh), at(hw, -hh), at(hw, hh), at(-hw, hh)]
    }
}

fn cross(o: [i64; 2], a: [i64; 2], b: [i64; 2]) -> i64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull of integer points (Andrew's monotone chain), counter-clockwise in image
/// coordinates, without collinear points; one or two points when they are all on a line.
pub(crate) fn convex_hull(mut points: Vec<[i64; 2]>) -> Vec<Point> {
    points.sort_unstable();
    points.dedup();
    if points.len() < 3 {
        return points.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    }
    let mut hull: Vec<[i64; 2]> = Vec::with_capacity(points.len() + 1);
    for pass in [&points[..], &points.iter().rev().copied().collect::<Vec<_>>()[..]] {
        let start = hull.len();
        for &p in pass {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull.iter().map(|p| [p[0] as f64, p[1] as f64]).collect()
}

/// The smallest-area rectangle holding a convex hull (rotating calipers: one side lies on a hull
/// edge). A hull of one or two points gives a rectangle with a zero side.
pub(crate) fn min_area_rect(hull: &[Point]) -> RotatedRect {
    match hull {
        [] => RotatedRect { center: [0.0, 0.0], axis: [1.0, 0.0], size: [0.0, 0.0] },
        [p] => RotatedRect { center: *p, axis: [1.0, 0.0], size: [0.0, 0.0] },
        _ => (0..hull.len())
            .filter_map(|i| rect_on_edge(hull, hull[i], hull[(i + 1) % hull.len()]))
            .min_by(|a, b| a.area().total_cmp(&b.area()))
            .unwrap_or(RotatedRect { center: hull[0], axis: [1.0, 0.0], size: [0.0, 0.0] }),
    }
}

/// The bounding rectangle of `points` with one side parallel to `a -> b`.
fn rect_on_edge(points: &[Point], a: Point, b: Point) -> Option<RotatedRect> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let length = dx.hypot(dy);
    if length == 0.0 {
        return None;
    }
    let (ux, uy) = (dx / length, dy / length);
    let (mut u0, mut u1, mut v0, mut v1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        let (u, v) = (p[0] * ux + p[1] * uy, -p[0] * uy + p[1] * ux);
        (u0, u1, v0, v1) = (u0.min(u), u1.max(u), v0.min(v), v1.max(v));
    }
    let (cu, cv) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
    let center = [cu * ux - cv * uy, cu * uy + cv * ux];
    Some(RotatedRect { center, axis: [ux, uy], size: [u1 - u0, v1 - v0] })
}

/// Corners as top-left, top-right, bottom-right, bottom-left: the two leftmost points (by x)
/// sorted by y give top-left and bottom-left, the two rightmost top-right and bottom-right.
pub(crate) fn order_corners(mut points: [Point; 4]) -> [Point; 4] {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let by_y = |p: Point, q: Point| if p[1] <= q[1] { (p, q) } else { (q, p) };
    let (tl, bl) = by_y(points[0], points[1]);
    let (tr, br) = by_y(points[2], points[3]);
    [tl, tr, br, bl]
}

/// Whether `p` is inside the convex polygon `poly` or on its boundary (either winding).
pub(crate) fn inside_convex(poly: &[Point], p: Point) -> bool {
    let (mut pos, mut neg) = (false, false);
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        let c = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
        pos |= c > 1e-9;
        neg |= c < -1e-9;
    }
    !(pos && neg)
}

pub(crate) fn distance(a: Point, b: Point) -> f64 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// A projective map of the plane, `[x, y] -> [(h0 x + h1 y + h2) / w, (h3 x + h4 y + h5) / w]`
/// with `w = h6 x + h7 y + 1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Homography([f64; 8]);

impl Homography {
    /// The map taking each `from[i]` to `to[i]`; `None` when three of the points are collinear.
    pub fn between(from: &[Point; 4], to: &[Point; 4]) -> Option<Homography> {
        let mut system = [[0.0f64; 9]; 8];
        for (i, (f, t)) in from.iter().zip(to).enumerate() {
            let [x, y] = *f;
            let [u, v] = *t;
            system[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
            system[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
        }
        solve(&mut system).map(Homography)
    }

    pub fn apply(&self, [x, y]: Point) -> Point {
        let h = &self.0;
        let w = h[6] * x + h[7] * y + 1.0;
        [(h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w]
    }
}

/// Solves an 8×8 linear system given as its augmented matrix (Gauss–Jordan, partial pivoting).
fn solve(m: &mut [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *v -= factor * p;
                }
            }
        }
    }
    let mut out = [0.0; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = m[i][8] / m[i][i];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point) -> bool {
        distance(a, b) < 1e-6
    }

    #[test]
    fn hull_of_a_filled_block_is_its_corners() {
        let points: Vec<[i64; 2]> = (0..10).flat_map(|x| (0..5).map(move |y| [x, y])).collect();
        let mut hull = convex_hull(points);
        hull.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        assert_eq!(hull, [[0.0, 0.0], [0.0, 4.0], [9.0, 0.0], [9.0, 4.0]]);
        assert_eq!(convex_hull(vec![[1, 1], [2, 2], [3, 3]]).len(), 2);
        assert_eq!(convex_hull(vec![[4, 4], [4, 4]]), [[4.0, 4.0]]);
    }

    #[test]
    fn min_rect_of_an_upright_block() {
        let rect = min_area_rect(&convex_hull(vec![[2, 3], [11, 3], [11, 7], [2, 7], [5, 5]]));
        assert!((rect.area() - 36.0).abs() < 1e-9, "{rect:?}");
        assert!((rect.short_side() - 4.0).abs() < 1e-9);
        assert!(close(rect.center, [6.5, 5.0]));
        let corners = order_corners(rect.corners());
        let want = [[2.0, 3.0], [11.0, 3.0], [11.0, 7.0], [2.0, 7.0]];
        assert!(corners.iter().zip(&want).all(|(a, b)| close(*a, *b)), "{corners:?}");
    }

    #[test]
    fn min_rect_of_a_tilted_rectangle() {
        // A 20×6 rectangle turned by atan(3/4): corners on integer points.
        let (u, v): (Point, Point) = ([4.0 / 5.0, 3.0 / 5.0], [-3.0 / 5.0, 4.0 / 5.0]);
        let corners: Vec<[i64; 2]> = [(0.0f64, 0.0f64), (20.0, 0.0), (20.0, 10.0), (0.0, 10.0)]
            .iter()
            .map(|&(a, b)| [(a * u[0] + b * v[0]).round() as i64 + 50, (a * u[1] + b * v[1]).round() as i64 + 50])
            .collect();
        let rect = min_area_rect(&convex_hull(corners));
        assert!((rect.area() - 200.0).abs() < 1e-6 && (rect.short_side() - 10.0).abs() < 1e-6, "{rect:?}");
        let grown = rect.expanded(2.0);
        assert!((grown.area() - 24.0 * 14.0).abs() < 1e-6 && close(grown.center, rect.center));
        assert_eq!(min_area_rect(&convex_hull(vec![[0, 0], [5, 0]])).short_side(), 0.0);
    }

    #[test]
    fn corner_order_and_inside() {
        let quad = order_corners([[10.0, 10.0], [0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]);
        assert_eq!(quad, [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]);
        assert!(inside_convex(&quad, [5.0, 5.0]) && inside_convex(&quad, [10.0, 3.0]));
        assert!(!inside_convex(&quad, [10.5, 3.0]) && !inside_convex(&quad, [-0.1, 0.0]));
    }

    #[test]
    fn homography_maps_corners() {
        let from = [[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [0.0, 10.0]];
        let to = [[5.0, 7.0], [48.0, 3.0], [50.0, 15.0], [6.0, 18.0]];
        let h = Homography::between(&from, &to).unwrap();
        assert!(from.iter().zip(&to).all(|(f, t)| close(h.apply(*f), *t)));
        let line = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]];
        assert!(Homography::between(&line, &to).is_none());
    }
}

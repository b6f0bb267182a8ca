//! The two files of a BRISQUE model as OpenCV stores them: an epsilon-SVR with an RBF kernel
//! (`cv::ml::SVM::save`, `opencv_ml_svm` format 3) and the per-feature range that scales the
//! features to [-1, 1] (`range`, a 2 x N `!!opencv-matrix` of floats: minima, then maxima).
//! Prediction follows `SVMImpl::PredictBody` for regression.

use crate::storage::Node;

/// A regression SVM with an RBF kernel: `sum_i alpha_i exp(-gamma |sv_i - x|^2) - rho`.
#[derive(Debug, Clone)]
pub struct Svr {
    gamma: f64,
    rho: f64,
    var_count: usize,
    /// Support vectors, one after the other, `var_count` floats each.
    support: Vec<f32>,
    alpha: Vec<f64>,
}

/// The observed minimum and maximum of each feature.
#[derive(Debug, Clone)]
pub struct FeatureRange {
    min: Vec<f32>,
    max: Vec<f32>,
}

fn field<'a>(node: &'a Node, key: &str) -> Result<&'a Node, String> {
    node.get(key).ok_or_else(|| format!("no `{key}`"))
}

fn number(node: &Node, key: &str) -> Result<f64, String> {
    field(node, key)?.as_f64().ok_or_else(|| format!("`{key}` is not a number"))
}

fn count(node: &Node, key: &str) -> Result<usize, String> {
    let value = number(node, key)?;
    if value >= 0.0 && value.fract() == 0.0 { Ok(value as usize) } else { Err(format!("`{key}` is not a count")) }
}

/// A sequence of numbers (as OpenCV reads them: `strtod`, then `(float)` where the type is `f`).
fn numbers(node: &Node, what: &str) -> Result<Vec<f64>, String> {
    let items = node.as_seq().ok_or_else(|| format!("{what} is not a sequence"))?;
    items.iter().map(|n| n.as_f64().ok_or_else(|| format!("{what} holds a value that is not a number"))).collect()
}

impl Svr {
    /// Reads the `opencv_ml_svm` node (the document's first top-level node, as `SVM::load` does).
    pub fn from_document(doc: &Node) -> Result<Svr, String> {
        let svm = match doc {
            Node::Map(entries) => &entries.first().ok_or("an empty document")?.1,
            _ => return Err("the document is not a mapping".into()),
        };
        let svm_type = field(svm, "svmType").or_else(|_| field(svm, "svm_type"))?.as_str().unwrap_or("");
        if !matches!(svm_type, "EPS_SVR" | "NU_SVR") {
            return Err(format!("svmType {svm_type:?} is not a regression (EPS_SVR or NU_SVR)"));
        }
        let kernel = field(svm, "kernel")?;
        let kernel_type = field(kernel, "type")?.as_str().unwrap_or("");
        if kernel_type != "RBF" {
            return Err(format!("kernel type {kernel_type:?} is not RBF"));
        }
        let gamma = number(kernel, "gamma")?;
        let var_count = count(svm, "var_count")?;
        let support = read_support_vectors(svm, var_count)?;
        let sv_total = support.len() / var_count.max(1);
        let (rho, alpha) = read_decision_function(svm, sv_total)?;
        Ok(Svr { gamma, rho, var_count, support, alpha })
    }

    pub fn var_count(&self) -> usize {
        self.var_count
    }

    pub fn support_vector_count(&self) -> usize {
        self.alpha.len()
    }

    /// The regression value for one (scaled) feature vector, rounded to `f32` as OpenCV returns it.
    pub fn predict(&self, x: &[f32]) -> f32 {
        assert_eq!(x.len(), self.var_count, "feature vector of the wrong length");
        let mut sum = -self.rho;
        for (sv, &alpha) in self.support.chunks_exact(self.var_count).zip(&self.alpha) {
            sum += f64::from(self.kernel(sv, x)) * alpha;
        }
        sum as f32
    }

    /// `calc_rbf`: squared distance in `f64` from `f32` differences (taken four at a time),
    /// times -gamma, rounded to `f32`, then `exp` in `f32`.
    fn kernel(&self, sv: &[f32], x: &[f32]) -> f32 {
        let mut s = 0f64;
        let mut quads = sv.chunks_exact(4).zip(x.chunks_exact(4));
        for (a, b) in &mut quads {
            let t: [f64; 4] = std::array::from_fn(|k| f64::from(a[k] - b[k]));
            s += t[0] * t[0] + t[1] * t[1];
            s += t[2] * t[2] + t[3] * t[3];
        }
        let tail = sv.len() / 4 * 4;
        for (a, b) in sv[tail..].iter().zip(&x[tail..]) {
            let t = f64::from(a - b);
            s += t * t;
        }
        ((s * -self.gamma) as f32).exp()
    }
}

fn read_support_vectors(svm: &Node, var_count: usize) -> Result<Vec<f32>, String> {
    let sv_total = count(svm, "sv_total")?;
    let rows = field(svm, "support_vectors")?.as_seq().ok_or("`support_vectors` is not a sequence")?;
    if var_count == 0 || sv_total == 0 || rows.len() != sv_total {
        return Err(format!("{} support vectors where sv_total is {sv_total} and var_count {var_count}", rows.len()));
    }
    let mut support = Vec::with_capacity(sv_total * var_count);
    for (i, row) in rows.iter().enumerate() {
        let values = numbers(row, "a support vector")?;
        if values.len() != var_count {
            return Err(format!("support vector {i} has {} values, not {var_count}", values.len()));
        }
        support.extend(values.iter().map(|&v| v as f32));
    }
    Ok(support)
}

/// The one decision function of a regression: rho and one alpha per support vector.
fn read_decision_function(svm: &Node, sv_total: usize) -> Result<(f64, Vec<f64>), String> {
    if svm.get("class_count").and_then(Node::as_f64).unwrap_or(0.0) > 1.0 {
        return Err("a classifier's model (class_count > 1)".into());
    }
    let functions = field(svm, "decision_functions")?.as_seq().ok_or("`decision_functions` is not a sequence")?;
    let [df] = functions else {
        return Err(format!("{} decision functions, not 1", functions.len()));
    };
    let alpha = numbers(field(df, "alpha")?, "`alpha`")?;
    let sv_count = count(df, "sv_count")?;
    if sv_count != sv_total || alpha.len() != sv_total {
        return Err(format!("{} alphas and sv_count {sv_count} for {sv_total} support vectors", alpha.len()));
    }
    Ok((number(df, "rho")?, alpha))
}

impl FeatureRange {
    /// Reads the `range` matrix (2 rows of float: minima, maxima).
    pub fn from_document(doc: &Node) -> Result<FeatureRange, String> {
        let m = field(doc, "range")?;
        let (rows, cols) = (count(m, "rows")?, count(m, "cols")?);
        let dt = field(m, "dt")?.as_str().unwrap_or("");
        if rows != 2 || dt != "f" {
            return Err(format!("`range` is {rows} rows of {dt:?}, not 2 rows of f"));
        }
        let data = numbers(field(m, "data")?, "`range.data`")?;
        if data.len() != rows * cols {
            return Err(format!("`range.data` has {} values for {rows}x{cols}", data.len()));
        }
        let values: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        let (min, max) = values.split_at(cols);
        Ok(FeatureRange { min: min.to_vec(), max: max.to_vec() })
    }

    pub fn feature_count(&self) -> usize {
        self.min.len()
    }

    /// `quality_utils::scale(mat, range, -1.f, 1.f)`: `-1 + 2 (x - min) / (max - min)` in `f32`.
    pub fn scale(&self, features: &[f32]) -> Vec<f32> {
        assert_eq!(features.len(), self.min.len(), "feature vector of the wrong length");
        let (lower, upper) = (-1.0f32, 1.0f32);
        features.iter().zip(self.min.iter().zip(&self.max)).map(|(&x, (&lo, &hi))| lower + (upper - lower) * (x - lo) / (hi - lo)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::parse;

    const MODEL: &str = "%YAML:1.0
---
opencv_ml_svm:
   format: 3
   svmType: EPS_SVR
   kernel:
      type: RBF
      gamma: 0.5
   C: 1.
   p: 0.1
   var_count: 5
   sv_total: 2
   support_vectors:
      - [ 0., 0., 0., 0., 0. ]
      - [ 1., 0., 0., 0., 1. ]
   decision_functions:
      -
         sv_count: 2
         rho: -1.
         alpha: [ 2., -4. ]
";

    #[test]
    fn predicts_the_rbf_sum() {
        let svr = Svr::from_document(&parse(MODEL).unwrap()).unwrap();
        assert_eq!((svr.var_count(), svr.support_vector_count()), (5, 2));
        let x = [1.0f32, 0.0, 0.0, 0.0, 0.0];
        // 2 exp(-0.5 * 1) - 4 exp(-0.5 * 1) + 1
        let expected = 2.0 * (-0.5f64).exp() - 4.0 * (-0.5f64).exp() + 1.0;
        assert!((f64::from(svr.predict(&x)) - expected).abs() < 1e-6, "{}", svr.predict(&x));
        assert_eq!(svr.predict(&[0.0; 5]), (2.0 - 4.0 * (-1.0f64).exp() + 1.0) as f32);
    }

    #[test]
    fn refuses_models_it_cannot_run() {
        for (from, to) in [("EPS_SVR", "C_SVC"), ("type: RBF", "type: LINEAR"), ("sv_total: 2", "sv_total: 3"), ("[ 2., -4. ]", "[ 2. ]")] {
            let text = MODEL.replace(from, to);
            assert!(Svr::from_document(&parse(&text).unwrap()).is_err(), "accepted {to}");
        }
    }

    #[test]
    fn scales_features_to_minus_one_one() {
        let doc = parse("range: !!opencv-matrix\n   rows: 2\n   cols: 2\n   dt: f\n   data: [ 0., 10., 2., 20. ]\n").unwrap();
        let range = FeatureRange::from_document(&doc).unwrap();
        assert_eq!(range.feature_count(), 2);
        assert_eq!(range.scale(&[0.0, 20.0]), vec![-1.0, 1.0]);
        assert_eq!(range.scale(&[1.0, 25.0]), vec![0.0, 2.0]);
    }
}

//! Test helpers: an op with a hand-written backward against the same math composed of
//! candle primitives (whose backward candle derives), values and gradients.

use candle_core::{Tensor, Var};

/// A named input variable of an op under test.
pub struct Input<'a> {
    pub name: &'static str,
    pub var: &'a Var,
}

impl<'a> Input<'a> {
    pub fn new(name: &'static str, var: &'a Var) -> Self {
        Self { name, var }
    }
}

/// Asserts `a` and `b` are equal within `tol` relative to the larger magnitude of
/// either (with a floor of 1, so values near zero are compared absolutely), and of one
/// length.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = a.iter().chain(b).fold(1f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "element {i}: {x} vs {y} (tolerance {tol} x {scale})"
        );
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Runs `op` and `reference` on the inputs, checks the outputs agree, then the
/// gradients of `sum(out * r)` (r a fixed random tensor) with respect to every input.
/// The gradients must also be large enough to mean something: a backward that returns
/// zeros fails.
pub fn check_gradients(
    inputs: &[Input],
    op: impl Fn(&[&Tensor]) -> candle_core::Result<Tensor>,
    reference: impl Fn(&[&Tensor]) -> candle_core::Result<Tensor>,
) {
    let ts: Vec<&Tensor> = inputs.iter().map(|i| i.var.as_tensor()).collect();
    let got = op(&ts).unwrap();
    let want = reference(&ts).unwrap();
    assert_eq!(got.dims(), want.dims(), "output shapes");
    assert_close(&values(&got), &values(&want), 1e-5);
    let r = crate::seeded_randn(99, 0.0, 1.0, got.shape(), got.device()).unwrap();
    let g_got = (got * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_want = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for i in inputs {
        let a = g_got.get(i.var.as_tensor());
        let b = g_want
            .get(i.var.as_tensor())
            .expect("the reference reaches every input");
        let a = a.unwrap_or_else(|| panic!("no gradient for {}", i.name));
        let (a, b) = (values(a), values(b));
        let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            norm > 1e-3,
            "{}: the reference gradient is too small to test",
            i.name
        );
        assert_close(&a, &b, 1e-5);
    }
}

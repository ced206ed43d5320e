use super::kernel::Kernel;
use super::*;

/// Deterministic values in [-1, 1) (a multiplicative hash of the index and seed).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ seed.rotate_left(17))
                .wrapping_add(seed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x Wᵀ` in f64, the reference every kernel is held to.
fn reference(x: &[f32], w: &[f32], m: usize, out: usize, inp: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * out];
    for r in 0..m {
        for o in 0..out {
            y[r * out + o] = (0..inp)
                .map(|k| x[r * inp + k] as f64 * w[o * inp + k] as f64)
                .sum();
        }
    }
    y
}

/// Shapes that cover every register block (1-6 rows and their sums), partial panels,
/// several `KC` blocks with a partial last one, the few-rows and many-rows paths.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 16, 8),
    (2, 33, 576),
    (3, 7, 5),
    (4, 48, 300),
    (5, 17, 1),
    (6, 64, 257),
    (7, 40, 513),
    (8, 192, 576),
    (13, 100, 31),
    (32, 70, 600),
    (143, 24, 40),
    (200, 50, 530),
];

#[test]
fn every_shape_equals_the_f64_product_within_f32_rounding() {
    for (i, &(m, out, inp)) in SHAPES.iter().enumerate() {
        let w = values(out * inp, 2 * i as u64);
        let x = values(m * inp, 2 * i as u64 + 1);
        let packed = PackedWeight::pack(&w, out, inp);
        let mut y = vec![f32::NAN; m * out];
        packed.matmul_t(&x, m, &mut y);
        let want = reference(&x, &w, m, out, inp);
        // f32 sums of `inp` products of magnitude <= 1: error well under inp * 2^-24
        // of the sum of magnitudes; a dropped or doubled term is off by far more.
        for (j, (&got, &want)) in y.iter().zip(&want).enumerate() {
            let bound = 1e-6 * inp as f64 + 1e-7;
            assert!(
                (got as f64 - want).abs() <= bound,
                "{m}x{out}x{inp} at {j}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn the_avx2_kernel_equals_the_loops_bit_for_bit() {
    // Both fuse each multiply-add and sum `k` in the same order.
    let ours = Kernel::detect();
    for (i, &(m, out, inp)) in SHAPES.iter().enumerate() {
        let w = values(out * inp, 40 + i as u64);
        let x = values(m * inp, 80 + i as u64);
        let packed = PackedWeight::pack(&w, out, inp);
        let (mut a, mut b) = (vec![0f32; m * out], vec![0f32; m * out]);
        packed.matmul_t_using(ours, &x, m, &mut a);
        packed.matmul_t_using(Kernel::Portable, &x, m, &mut b);
        assert_eq!(a, b, "{m}x{out}x{inp} ({ours:?} vs loops)");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (m, out, inp) = (150, 90, 700);
    let w = values(out * inp, 5);
    let x = values(m * inp, 6);
    let packed = PackedWeight::pack(&w, out, inp);
    let run = |threads: usize, m: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut y = vec![0f32; m * out];
        pool.install(|| packed.matmul_t(&x[..m * inp], m, &mut y));
        y
    };
    for m in [8, 150] {
        let one = run(1, m);
        assert_eq!(one, run(3, m), "{m} rows");
        // A row's result is the same whichever path or block it falls in.
        assert_eq!(&one[..8 * out], &run(2, 8)[..]);
    }
}

#[test]
fn packing_keeps_every_weight_and_pads_with_zeros() {
    let (out, inp) = (37, 11);
    let w = values(out * inp, 9);
    let packed = PackedWeight::pack(&w, out, inp);
    assert_eq!(packed.dims(), (37, 11));
    assert_eq!(packed.unpack(), w);
    assert_eq!(packed.bytes(), 3 * inp * NR * 4);
    assert!(packed.lines[2 * inp..]
        .iter()
        .all(|l| l.0[out - 2 * NR..].iter().all(|&v| v == 0.0)));
    // Degenerate sizes do not panic.
    let empty = PackedWeight::pack(&[], 4, 0);
    let mut y = vec![1f32; 8];
    empty.matmul_t(&[], 2, &mut y);
    assert_eq!(y, vec![0f32; 8]);
    PackedWeight::pack(&[], 0, 3).matmul_t(&[0.0; 6], 2, &mut []);
}

//! Counting a value's bin over a feature's thresholds padded to a power-of-two width: a fixed
//! number of compares and adds, no loop left to run. Natively LLVM vectorises the plain count;
//! in WebAssembly (with `simd128`) the vector code is spelled out.

/// How many of `thresholds` lie below `x` (`t < x`), or at or below it when not `BELOW_ONLY`
/// (`t <= x`). NaN thresholds (the padding) never count.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub(crate) fn count_below<const W: usize, const BELOW_ONLY: bool>(thresholds: &[f32; W], x: f32) -> u32 {
    // LLVM vectorises this natively (SSE/AVX compares and adds).
    if BELOW_ONLY {
        thresholds.iter().map(|&t| u32::from(t < x)).sum()
    } else {
        thresholds.iter().map(|&t| u32::from(t <= x)).sum()
    }
}

/// [`count_below`] in WebAssembly SIMD: four thresholds per compare. LLVM does not vectorise
/// the plain loop for WebAssembly (it emits one scalar compare per threshold, which Cranelift
/// then spills), so the vector code is spelled out: the same compares, the same count.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn count_below<const W: usize, const BELOW_ONLY: bool>(thresholds: &[f32; W], x: f32) -> u32 {
    use core::arch::wasm32::*;
    let x = f32x4_splat(x);
    let mut below = i32x4_splat(0);
    for t in thresholds.chunks_exact(4) {
        let t = f32x4(t[0], t[1], t[2], t[3]);
        // A true lane is all ones, -1: subtracting it counts it.
        below = i32x4_sub(below, if BELOW_ONLY { f32x4_lt(t, x) } else { f32x4_le(t, x) });
    }
    let halves = i32x4_add(below, i32x4_shuffle::<2, 3, 0, 1>(below, below));
    (i32x4_extract_lane::<0>(halves) + i32x4_extract_lane::<1>(halves)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    /// Whichever path this target compiles, the count is the plain one, and NaN padding never
    /// counts. (`Table`'s tests check the bins these counts make against the binary search.)
    #[test]
    fn counts_the_thresholds_below_and_never_the_padding() {
        fn check<const W: usize>(rng: &mut Lcg) {
            let mut thresholds = [f32::NAN; W];
            let n = rng.next_u32() as usize % (W + 1);
            for (i, t) in thresholds.iter_mut().take(n).enumerate() {
                *t = i as f32 - 2.0;
            }
            for x in [-3.0, -2.0, -1.5, 0.0, -0.0, W as f32, f32::INFINITY, f32::NEG_INFINITY] {
                let below = thresholds.iter().filter(|&&t| t < x).count() as u32;
                let at_or_below = thresholds.iter().filter(|&&t| t <= x).count() as u32;
                assert_eq!(count_below::<W, true>(&thresholds, x), below, "{n} of {W}, x {x}");
                assert_eq!(count_below::<W, false>(&thresholds, x), at_or_below, "{n} of {W}, x {x}");
            }
        }
        let mut rng = Lcg::new(3);
        for _ in 0..20 {
            check::<4>(&mut rng);
            check::<8>(&mut rng);
            check::<16>(&mut rng);
            check::<32>(&mut rng);
            check::<64>(&mut rng);
        }
    }
}

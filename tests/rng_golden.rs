//! Bit-for-bit checks of the noise generators against `tests/fixtures/golden/randn.safetensors`
//! (torch 2.15 CPU generator on an AVX-512 machine, and A1111's `rng_philox.py`).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use sd_worker_rbee::backend::rng::{
    Mt19937, NoiseGenerator, PhiloxGenerator, TorchCpuGenerator, TorchMath,
};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden/randn.safetensors"
);

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(GOLDEN, &Device::Cpu).expect("load randn.safetensors")
}

/// Tensor names are `family.seedS[.extra].SHAPE`.
struct Name<'a> {
    family: &'a str,
    seed: u64,
    extra: Option<&'a str>,
    numel: usize,
}

fn parse(name: &str) -> Name<'_> {
    let parts: Vec<&str> = name.split('.').collect();
    let seed = parts[1]
        .strip_prefix("seed")
        .expect("seed part")
        .parse()
        .expect("seed");
    let shape = parts[parts.len() - 1];
    let numel = if shape == "u32x16" {
        16
    } else {
        shape
            .split('x')
            .map(|d| d.parse::<usize>().expect("dim"))
            .product()
    };
    let extra = (parts.len() == 4).then(|| parts[2]);
    Name {
        family: parts[0],
        seed,
        extra,
        numel,
    }
}

fn f32_bits(tensor: &Tensor) -> Vec<u32> {
    let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
    values.into_iter().map(f32::to_bits).collect()
}

/// Number of differing elements and the largest absolute difference.
fn compare(got: &[f32], expected: &Tensor) -> (usize, f32) {
    let expected: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), expected.len());
    got.iter()
        .zip(&expected)
        .fold((0, 0.0), |(count, worst), (g, e)| {
            if g.to_bits() == e.to_bits() {
                (count, worst)
            } else {
                (count + 1, worst.max((g - e).abs()))
            }
        })
}

/// Checks every tensor of `family` against what `draw` produces for its name, and fails
/// with a per-tensor report if any element differs.
fn check_family(family: &str, expected_count: usize, mut draw: impl FnMut(&Name) -> Vec<f32>) {
    let tensors = golden();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, expected) in &tensors {
        let parsed = parse(name);
        if parsed.family != family {
            continue;
        }
        checked += 1;
        let got = draw(&parsed);
        let (mismatches, worst) = compare(&got, expected);
        if mismatches > 0 {
            failures.push(format!(
                "{name}: {mismatches}/{} differ, max |diff| {worst:e}",
                got.len()
            ));
        }
    }
    assert_eq!(
        checked, expected_count,
        "{family} tensors in the golden file"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mt19937_raw_words() {
    let tensors = golden();
    let mut checked = 0;
    for (name, expected) in tensors.iter().filter(|(n, _)| n.starts_with("mt19937.")) {
        let mut engine = Mt19937::new(parse(name).seed);
        let got: Vec<u32> = (0..16).map(|_| engine.next_u32()).collect();
        assert_eq!(got, expected.to_vec1::<u32>().unwrap(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn torch_cpu_fresh_generators_and_sequence() {
    check_family("torch_cpu", 24, |name| match name.extra {
        None => TorchCpuGenerator::new(name.seed).randn(name.numel),
        Some(step) => {
            // seq0..seq3 are consecutive calls 3x5, 3x5, 1x4x8x8, 3x5 on one generator.
            let calls = [15, 15, 256, 15];
            let index: usize = step
                .strip_prefix("seq")
                .expect("seq index")
                .parse()
                .unwrap();
            let mut generator = TorchCpuGenerator::new(name.seed);
            let mut last = Vec::new();
            for &n in &calls[..=index] {
                last = generator.randn(n);
            }
            assert_eq!(last.len(), name.numel);
            last
        }
    });
}

#[test]
fn torch_cpu_libm_variant() {
    check_family("torch_cpu_noavx", 20, |name| {
        TorchCpuGenerator::with_math(name.seed, TorchMath::Libm).randn(name.numel)
    });
}

#[test]
fn philox_normals_including_second_call() {
    check_family("philox", 24, |name| {
        let mut generator = PhiloxGenerator::new(name.seed);
        match name.extra {
            None => generator.randn(name.numel),
            Some("call1") => {
                generator.randn(name.numel);
                generator.randn(name.numel)
            }
            Some(other) => panic!("unknown philox tensor kind {other}"),
        }
    });
}

#[test]
fn philox_raw_words() {
    let tensors = golden();
    let mut checked = 0;
    for (name, expected) in tensors.iter().filter(|(n, _)| n.starts_with("philox_u32.")) {
        let parsed = parse(name);
        let generator = PhiloxGenerator::new(parsed.seed);
        let words: Vec<[u32; 2]> = (0..parsed.numel as u32)
            .map(|i| generator.words(i))
            .collect();
        let mut got: Vec<u32> = words.iter().map(|w| w[0]).collect();
        got.extend(words.iter().map(|w| w[1]));
        assert_eq!(
            got,
            expected.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn batch_noise_first_image_is_the_golden_draw() {
    use candle_core::DType;
    use sd_worker_rbee::backend::request::RngKind;
    use sd_worker_rbee::backend::rng::BatchNoise;

    let tensors = golden();
    let mut noise = BatchNoise::new(RngKind::TorchCpu, &[42, 43]);
    let batch = noise
        .randn(&[2, 4, 64, 64], &Device::Cpu, DType::F32)
        .unwrap();
    assert_eq!(
        f32_bits(&batch.get(0).unwrap()),
        f32_bits(&tensors["torch_cpu.seed42.1x4x64x64"].get(0).unwrap())
    );
}

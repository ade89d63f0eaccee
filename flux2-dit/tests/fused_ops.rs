//! The CPU backends' fused element-wise ops (flux2-ops `fused_norm::host`, `fused_gates::host`: the
//! formulas of the CUDA kernels) give the tensor-op compositions' values and gradients, in f32 and bf16.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::DType;
use flux2_test_support::fused_op_cases::{self, CaseResult};

fn assert_all_pass(results: &[(CaseResult, [f32; 2])], expected: usize) {
    for (r, tol) in results {
        println!("{}", r.line(*tol));
    }
    let failures: Vec<String> =
        results.iter().filter(|(r, tol)| !r.passes(*tol)).map(|(r, tol)| r.line(*tol)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(results.len(), expected);
}

#[test]
fn fused_ops_match_the_compositions_on_flex() {
    let results = fused_op_cases::all::<Autodiff<Flex>>(&Default::default(), &[DType::F32, DType::BF16], false);
    assert_all_pass(&results, 16);
}

/// NdArray has no bf16.
#[test]
fn fused_ops_match_the_compositions_on_ndarray() {
    assert_all_pass(&fused_op_cases::all::<Autodiff<NdArray>>(&Default::default(), &[DType::F32], false), 8);
}

#[test]
fn the_cpu_backends_have_the_fused_ops() {
    assert!(flux2_ops::fused_norm::is_registered::<Flex>());
    assert!(flux2_ops::fused_norm::is_registered::<Autodiff<Flex>>());
    assert!(flux2_ops::fused_norm::is_registered::<NdArray>());
    assert!(flux2_ops::fused_gates::is_registered::<Autodiff<Flex>>());
    assert!(flux2_ops::fused_gates::is_registered::<NdArray>());
}

use tch::{Device, Kind, Tensor};

#[test]
fn matmul_runs_through_libtorch_and_matches_a_hand_computation() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).reshape([2, 2]);
    let c = a.matmul(&b).to_device(Device::Cpu).to_kind(Kind::Float);
    let got: Vec<f32> = Vec::<f32>::try_from(c.flatten(0, -1)).unwrap_or_default();
    // [[1*5+2*7, 1*6+2*8], [3*5+4*7, 3*6+4*8]]
    assert_eq!(got, vec![19.0, 22.0, 43.0, 50.0]);
}

#[test]
fn summary_names_the_thread_count() {
    assert!(super::libtorch_summary().contains("threads="));
}

//! An edit (instruction) LoRA trains and samples end to end: control images from a `control_path`
//! folder join each step as reference tokens, and a sample prompt with `ctrl_img` renders with its
//! reference (CPU, a few steps of the demo pipeline).

use burn::backend::{Autodiff, Flex};
use flow_train::job::{JobFormat, load_job_str};
use flow_train::train::{RunOptions, TrainModels, train};

type A = Autodiff<Flex>;

#[test]
fn edit_dataset_trains_and_samples_with_references() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    flow_train::demo::prepare(root).unwrap();
    // Controls: the same pictures mirrored, matched by file stem.
    let controls = root.join("controls");
    std::fs::create_dir_all(&controls).unwrap();
    for entry in std::fs::read_dir(root.join("dataset")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let img = image::open(&path).unwrap().fliph();
            img.save(controls.join(path.file_name().unwrap())).unwrap();
        }
    }
    let reference = controls.join("ring_00.png");
    let text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("steps: 300", "steps: 4")
        .replace("sample_every: 100", "sample_every: 4")
        .replace("          cache_text_embeddings: true", &format!("          cache_text_embeddings: true\n          control_path: {}", controls.display()))
        .replace(
            "        prompts:\n          - \"a photo of [trigger] on a blue background\"\n          - \"a photo of [trigger] on a green background\"\n          - \"a photo of a white square on a purple background\"",
            &format!("        samples:\n          - prompt: \"mirror the [trigger]\"\n            ctrl_img: {}", reference.display()),
        )
        .replace("sample_steps: 12", "sample_steps: 2");
    let job = load_job_str(&text, JobFormat::Yaml, "edit").expect("valid edit job");
    assert_eq!(job.plan.sample.prompts[0].control_images, vec![reference.clone()]);
    let set = dataset_buckets::DatasetSet::load(&job.plan.datasets, &job.plan.dataset_options).unwrap();
    let r = dataset_buckets::SampleRef { dataset: 0, sample: 0 };
    assert_eq!(set.record(r).unwrap().controls.len(), 1, "every target has its control image");
    let models = TrainModels::<A>::load(&job, &Default::default()).unwrap();
    let summary = train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).unwrap();
    assert_eq!(summary.steps, 4);
    assert!(summary.final_loss.is_some_and(f32::is_finite));
    let samples = summary.output_dir.join("samples");
    for step in [0, 4] {
        let path = samples.join(format!("{step:09}_0.png"));
        let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((img.width(), img.height()), (128, 128), "the sample takes the job's size");
    }
}

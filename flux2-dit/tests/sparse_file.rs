//! Sparse checkpoints (`write_sparse_file`, what `examples/sparse_checkpoint` writes at full size for the
//! host-memory measurement of issue 17): at a small config their headers are those of the real files (the
//! bf16 file `save_bfl_file` writes, the float8 file `write_float8_file` writes from it: same keys,
//! dtypes, shapes and metadata), their data takes no disk, and the loader builds the model from
//! them: dense, quantized while loading, and float8 as stored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{DType, ElementConversion};
use flux2_dit::{
    BaseStorage, Checkpoint, Flux2Config, Flux2Transformer, RandomSource, TensorStore, save_bfl_file,
    write_float8_file, write_sparse_file,
};
use flux2_ops::quant::QType;

type B = Flex;

/// `bench_train_step --small`'s config.
fn config() -> Flux2Config {
    flux2_test_support::tiny_dit::small_config()
}

type Header = (BTreeMap<String, (safetensors::Dtype, Vec<usize>)>, HashMap<String, String>);

/// Every tensor's stored dtype and shape, and the metadata.
fn header(path: &Path) -> Header {
    let store = TensorStore::open_file(path).unwrap();
    let tensors = store.keys().map(|k| (k.to_string(), (store.dtype(k).unwrap(), store.shape(k).unwrap().to_vec())));
    (tensors.collect(), store.metadata())
}

#[test]
fn sparse_files_have_the_real_headers_no_data_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = config();
    let model = Flux2Transformer::<B>::from_source(&config, &mut RandomSource::new(0), DType::BF16, &device).unwrap();
    let real = tmp.path().join("real.safetensors");
    save_bfl_file(&model, &real, "", DType::BF16).unwrap();
    let real8 = tmp.path().join("real_fp8.safetensors");
    write_float8_file(&Checkpoint::open(&real).unwrap(), &real8, &|_, _| {}).unwrap();

    for (float8, real) in [(false, &real), (true, &real8)] {
        let sparse = tmp.path().join(format!("sparse_{float8}.safetensors"));
        let len = write_sparse_file::<B>(&config, float8, &sparse, &device).unwrap();
        assert_eq!(header(&sparse), header(real), "float8={float8}");
        assert_eq!(len, std::fs::metadata(&sparse).unwrap().len());
        if float8 {
            // Same order as `quantize` writes (sorted keys), so the same bytes up to the data; the bf16
            // file `save_bfl_file` writes is in model order, whose offsets print to another length.
            assert_eq!(len, std::fs::metadata(real).unwrap().len());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let allocated = std::fs::metadata(&sparse).unwrap().blocks() * 512;
            assert!(allocated < len / 2, "float8={float8}: {allocated} bytes on disk for a {len}-byte file");
        }

        let storages = if float8 {
            vec![BaseStorage::default()]
        } else {
            vec![BaseStorage::default(), BaseStorage::quantized(Some(QType::QFloat8))]
        };
        for storage in storages {
            let checkpoint = Checkpoint::open(&sparse).unwrap();
            assert_eq!(checkpoint.config, config, "the config inferred from the header");
            let loaded = checkpoint.load_with::<B>(DType::BF16, storage, &device).unwrap();
            let zeros = loaded.double_blocks[0].img_attn.qkv.base_weight().abs().sum().into_scalar().elem::<f32>();
            assert_eq!(zeros, 0.0, "float8={float8} {storage:?}: a hole reads as zeros");
            let quantized = loaded.single_blocks[1].linear1.quantized.is_some();
            assert_eq!(quantized, float8 || storage.quantize.is_some(), "float8={float8} {storage:?}");
        }
    }
}

//! Epoch batches: formed within a bucket (all images of a batch share a size, so they stack), never
//! across datasets (each dataset has its own trigger, loss multiplier and LoRA multiplier), shuffled
//! per epoch from the job seed.
//!
//! Per epoch and stream: every bucket's samples are shuffled, cut into batches of the dataset's batch
//! size, and a short last batch is filled up by repeating its own samples from its start, as
//! ai-toolkit does (turn that off with [`Sampler::without_padding`]); then the order of all batches is
//! shuffled. Each shuffle uses a stream derived from (seed, epoch, dataset, bucket), so epoch `n` is
//! the same whether or not epochs `0..n` ran in this process: resuming a run reproduces its batches.
//! (ai-toolkit shuffles buckets once and reshuffles only the batch order per epoch.)

use crate::bucket::Size;
use crate::rng::Rng;
use crate::set::{DatasetSet, SampleRef};

/// Which datasets a sampler draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Training datasets (`is_reg: false`).
    Main,
    /// Regularization datasets (`is_reg: true`), served separately like ai-toolkit's reg loader.
    Reg,
}

/// One batch: samples of one dataset and one bucket size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub dataset: usize,
    pub bucket: Size,
    pub samples: Vec<SampleRef>,
}

/// Produces the batches of each epoch. Cheap to create; holds no state between epochs.
#[derive(Clone, Debug)]
pub struct Sampler<'a> {
    set: &'a DatasetSet,
    datasets: Vec<usize>,
    batch_size: usize,
    seed: u64,
    pad: bool,
}

impl<'a> Sampler<'a> {
    pub(crate) fn new(set: &'a DatasetSet, stream: Stream, batch_size: usize, seed: u64) -> Self {
        let want_reg = stream == Stream::Reg;
        let datasets = set.datasets().iter().filter(|d| d.config().is_reg == want_reg).map(|d| d.index()).collect();
        Sampler { set, datasets, batch_size: batch_size.max(1), seed, pad: true }
    }

    /// Keep short last batches short instead of padding them with repeats.
    pub fn without_padding(mut self) -> Self {
        self.pad = false;
        self
    }

    /// Whether the stream has no datasets.
    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty()
    }

    fn batch_size_of(&self, dataset: usize) -> usize {
        self.set.datasets().get(dataset).and_then(|d| d.config().batch_size).unwrap_or(self.batch_size).max(1)
    }

    /// Number of batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.datasets
            .iter()
            .filter_map(|&d| self.set.datasets().get(d).map(|ds| (d, ds)))
            .map(|(d, ds)| {
                let bs = self.batch_size_of(d);
                ds.buckets().iter().map(|b| b.samples.len().div_ceil(bs)).sum::<usize>()
            })
            .sum()
    }

    /// The batches of `epoch`, in training order.
    pub fn epoch(&self, epoch: u64) -> Vec<Batch> {
        let mut batches = Vec::new();
        for &d in &self.datasets {
            let Some(dataset) = self.set.datasets().get(d) else { continue };
            let bs = self.batch_size_of(d);
            for (bi, bucket) in dataset.buckets().iter().enumerate() {
                let mut order = bucket.samples.clone();
                Rng::derive(self.seed, "bucket-shuffle", &[epoch, d as u64, bi as u64]).shuffle(&mut order);
                for chunk in order.chunks(bs) {
                    let mut samples: Vec<SampleRef> =
                        chunk.iter().map(|&sample| SampleRef { dataset: d, sample }).collect();
                    if self.pad {
                        let have = samples.len();
                        for i in 0..bs - have {
                            samples.push(samples[i % have]);
                        }
                    }
                    batches.push(Batch { dataset: d, bucket: bucket.size, samples });
                }
            }
        }
        Rng::derive(self.seed, "batch-order", &[epoch]).shuffle(&mut batches);
        batches
    }
}

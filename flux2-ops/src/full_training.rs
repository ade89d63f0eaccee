//! Full training of a module (every weight, not adapters): the models load their weights frozen, and
//! this switches every float parameter to require a gradient. Used where a whole model trains: the
//! demo's pretraining of its tiny transformer and autoencoder.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

struct RequireGrad;

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// `module` with every float parameter requiring a gradient (constants, plain tensor fields, stay as
/// they are).
pub fn train_every_weight<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut RequireGrad)
}

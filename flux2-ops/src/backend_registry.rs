//! Per-backend tables of accelerated ops, looked up by backend type.
//!
//! The model is generic over `B: Backend`, but its fast paths (the fused attention, vendor GEMMs) exist
//! for some backends only and need extra trait bounds. A registry keyed by `TypeId::of::<B>()` holds, for
//! each backend that has one, a plain function pointer without those bounds, so generic code can find it
//! at run time and fall back to Burn's op otherwise. Each op module owns one [`OpRegistry`] and fills it
//! with the backends of this crate's features on first use.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

pub(crate) type OpMap = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

pub(crate) struct OpRegistry {
    map: OnceLock<RwLock<OpMap>>,
    builtin: fn(&mut OpMap),
}

impl OpRegistry {
    /// A registry that `builtin` fills on first use.
    pub(crate) const fn new(builtin: fn(&mut OpMap)) -> Self {
        Self { map: OnceLock::new(), builtin }
    }

    fn map(&self) -> &RwLock<OpMap> {
        self.map.get_or_init(|| {
            let mut map = OpMap::new();
            (self.builtin)(&mut map);
            RwLock::new(map)
        })
    }

    pub(crate) fn insert<B: 'static, F: Any + Send + Sync>(&self, op: F) {
        insert::<B, F>(&mut self.map().write().unwrap_or_else(|e| e.into_inner()), op);
    }

    /// The op registered for `B`, if any (`F` is the function-pointer type the module stores).
    pub(crate) fn get<B: 'static, F: Any + Copy>(&self) -> Option<F> {
        let map = self.map().read().unwrap_or_else(|e| e.into_inner());
        map.get(&TypeId::of::<B>()).and_then(|e| e.downcast_ref::<F>().copied())
    }

    pub(crate) fn contains<B: 'static>(&self) -> bool {
        self.map().read().unwrap_or_else(|e| e.into_inner()).contains_key(&TypeId::of::<B>())
    }
}

pub(crate) fn insert<B: 'static, F: Any + Send + Sync>(map: &mut OpMap, op: F) {
    map.insert(TypeId::of::<B>(), Box::new(op));
}

/// Calls `$register!(B)` for every backend compiled into this crate (features `flex`, `ndarray`, `cuda`)
/// and its `Autodiff` wrappers (both checkpointing strategies); `@autodiff $register, B` does one backend.
macro_rules! for_builtin_backends {
    ($register:ident) => {
        #[cfg(feature = "flex")]
        $crate::backend_registry::for_builtin_backends!(@autodiff $register, burn::backend::Flex);
        #[cfg(feature = "ndarray")]
        $crate::backend_registry::for_builtin_backends!(@autodiff $register, burn::backend::NdArray);
        #[cfg(feature = "cuda")]
        $crate::backend_registry::for_builtin_backends!(@autodiff $register, burn::backend::Cuda);
    };
    (@autodiff $register:ident, $b:ty) => {
        $register!($b);
        $register!(burn::backend::Autodiff<$b>);
        $register!(burn::backend::Autodiff<$b, burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing>);
    };
}
pub(crate) use for_builtin_backends;

/// Fills `$map` with `Entry<B>` values made by `$entry::<B>()` (both names resolved where the macro is
/// invoked) for CUDA and its `Autodiff` wrappers under the `cuda` feature: the registries whose ops
/// only CUDA accelerates (GEMMs, quantized weights, offloading).
macro_rules! cuda_entries {
    ($map:ident, $entry:ident) => {
        #[cfg(feature = "cuda")]
        {
            macro_rules! add {
                ($b:ty) => {
                    $crate::backend_registry::insert::<$b, Entry<$b>>($map, $entry::<$b>());
                };
            }
            $crate::backend_registry::for_builtin_backends!(@autodiff add, burn::backend::Cuda);
        }
        let _ = $map;
    };
}
pub(crate) use cuda_entries;

/// The registry of a fused element-wise op module (`fused_norm`, `fused_gates`), whose `Entry<B>` is a
/// struct of plain functions made by `entry::<B>()`: `Clone`/`Copy` for `Entry` (by hand: a derive would
/// ask `B: Copy`), the `REGISTRY` filled with the CPU backends of this crate's features and, while
/// [`crate::cuda::fast_kernels`] allows it, CUDA (each with its `Autodiff` wrappers), and the public
/// `register::<B>()` / `is_registered::<B>()`.
macro_rules! fused_registry {
    ($backend_trait:ident) => {
        impl<B: Backend> Clone for Entry<B> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<B: Backend> Copy for Entry<B> {}

        static REGISTRY: $crate::backend_registry::OpRegistry = $crate::backend_registry::OpRegistry::new(builtin);

        fn builtin(map: &mut $crate::backend_registry::OpMap) {
            #[allow(unused_macros)]
            macro_rules! add {
                ($b:ty) => {
                    $crate::backend_registry::insert::<$b, Entry<$b>>(map, entry::<$b>());
                };
            }
            #[cfg(feature = "flex")]
            $crate::backend_registry::for_builtin_backends!(@autodiff add, burn::backend::Flex);
            #[cfg(feature = "ndarray")]
            $crate::backend_registry::for_builtin_backends!(@autodiff add, burn::backend::NdArray);
            // The CUDA kernels only where asked for until they have been checked on a GPU.
            #[cfg(feature = "cuda")]
            if $crate::cuda::fast_kernels() {
                $crate::backend_registry::for_builtin_backends!(@autodiff add, burn::backend::Cuda);
            }
            let _ = map;
        }

        /// Registers `B`'s kernels (this crate's backends and their autodiff wrappers are registered already).
        pub fn register<B: $backend_trait>() {
            REGISTRY.insert::<B, Entry<B>>(entry::<B>());
        }

        /// Whether `B` runs the fused ops (else the callers' tensor-op compositions).
        pub fn is_registered<B: Backend>() -> bool {
            REGISTRY.contains::<B>()
        }
    };
}
pub(crate) use fused_registry;

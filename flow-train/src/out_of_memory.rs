//! Running out of device memory as one clear error, not a cascade of panics.
//!
//! What cubecl 0.10 does when a GPU allocation fails: the allocation runs on cubecl's own device
//! thread, whose `reserve(..).unwrap()` panics with "can't allocate buffer of size: N"; that thread
//! catches the panic and only logs it. The tensor handle stays unbound, so every later kernel touching
//! it panics there too ("Memory page 0 doesn't exist"), and the next blocking call on the caller's
//! thread (a read, a sync) panics with a `CallError`. Nothing returns an error.
//!
//! So the boundary is ours: [`install`] adds a panic hook that recognises an allocation failure,
//! remembers the first one (bytes asked for, the phase it happened in) and silences the cascade that
//! follows; [`guard`] runs a whole command under `catch_unwind` and turns the panic that reaches the
//! caller's thread into [`OutOfMemory`]; the trainer names the phase it is in with [`set_phase`]
//! ("loading the models", "step 12 forward", "sampling previews at step 100", ...). Checkpoints are
//! written to a temporary name and renamed when complete, so the newest complete one stays the newest.
//!
//! On the CPU an allocation failure aborts the process (Rust's allocator does not unwind): there the
//! size checks before allocating are what protects a run.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, Once};

/// The first allocation failure of the process, as the hook saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutOfMemory {
    /// What the program was doing ([`set_phase`]).
    pub phase: String,
    /// Bytes the failed allocation asked for, when the message names them.
    pub requested: Option<u64>,
    /// (free, total) device bytes after the failure, when the device can be asked.
    pub device_memory: Option<(u64, u64)>,
    /// The allocator's own message.
    pub message: String,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "out of device memory while {}", self.phase)?;
        match self.requested {
            Some(bytes) => write!(f, ": an allocation of {} failed", human(bytes))?,
            None => write!(f, ": an allocation failed ({})", self.message)?,
        }
        if let Some((free, total)) = self.device_memory {
            write!(f, " ({} of {} free on the device now)", human(free), human(total))?;
        }
        write!(f, ".")
    }
}

impl OutOfMemory {
    /// What a training run adds to the message: the state on disk and the job keys that lower memory.
    pub fn training_advice(&self) -> &'static str {
        "Nothing half-written was kept: the newest complete checkpoint in the output folder is intact and `train` \
         resumes from it.\nTo lower memory: `train.gradient_checkpointing: true` (block recomputation), \
         `train.batch_size: 1`, a smaller `datasets[].resolution`, a lower `network.linear` rank, `train.dtype: bf16`; \
         see docs/user-guide.md (memory)."
    }

    /// What sampling adds to the message: the options that lower memory.
    pub fn sampling_advice(&self) -> &'static str {
        "To lower memory: `--dtype bf16`, a smaller `--width`/`--height`, fewer `--reference` images; see \
         docs/inference.md."
    }
}

impl std::error::Error for OutOfMemory {}

#[derive(Default)]
struct State {
    phase: String,
    failure: Option<OutOfMemory>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: Mutex<State> = Mutex::new(State { phase: String::new(), failure: None });
    // A panic while the lock is held (none of ours does) must not hide the failure.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Names what the program does from now on, for the error message.
pub fn set_phase(phase: impl Into<String>) {
    state().phase = phase.into();
}

/// Whether a panic message is cubecl's (or the driver's) report of a failed device allocation.
pub fn is_allocation_failure(message: &str) -> bool {
    ["can't allocate buffer", "BufferTooBig", "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"]
        .iter()
        .any(|m| message.contains(m))
}

/// The byte count in an allocation failure message ("... size: 1234 ..." or "size 1234").
fn requested_bytes(message: &str) -> Option<u64> {
    let at = message.find("size")? + 4;
    let digits: String =
        message[at..].chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn panic_message(payload: &dyn std::any::Any) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Installs the hook (once per process; later calls do nothing). Panics that are not about memory,
/// before any allocation failed, still print as before.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let mut s = state();
            if s.failure.is_some() {
                // The cascade after the first failure: one message is printed at the boundary.
                return;
            }
            if is_allocation_failure(&message) {
                let phase = if s.phase.is_empty() { "running".to_string() } else { s.phase.clone() };
                s.failure =
                    Some(OutOfMemory { phase, requested: requested_bytes(&message), device_memory: None, message });
                return;
            }
            drop(s);
            previous(info);
        }));
    });
}

/// The recorded failure, if any, with the device's memory filled in by `device_memory`.
pub fn failure() -> Option<OutOfMemory> {
    state().failure.clone()
}

/// Runs `f`; a panic after a recorded allocation failure becomes `Err(OutOfMemory)`, any other panic
/// continues as a panic. `device_memory` asks the device for (free, total) bytes (`None` on the CPU).
pub fn guard<T>(f: impl FnOnce() -> T, device_memory: impl FnOnce() -> Option<(u64, u64)>) -> Result<T, OutOfMemory> {
    install();
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => match failure() {
            // The failed allocation was on cubecl's thread and nothing on ours read the result yet:
            // the run cannot be trusted either way.
            Some(mut oom) => {
                oom.device_memory = device_memory();
                Err(oom)
            }
            None => Ok(value),
        },
        Err(payload) => match failure() {
            Some(mut oom) => {
                oom.device_memory = device_memory();
                Err(oom)
            }
            None => panic::resume_unwind(payload),
        },
    }
}

/// Forgets a recorded failure (tests that provoke one).
#[cfg(test)]
fn reset() {
    state().failure = None;
}

fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes as f64 >= GIB {
        format!("{:.2} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cubecl's sequence, reproduced on the CPU: the allocation panics on another thread (which
    /// catches it, as cubecl's device thread does), the cascade panics there again, then the caller's
    /// next blocking call panics. `guard` reports one error naming the phase and the bytes.
    #[test]
    fn an_allocation_failure_on_another_thread_becomes_one_error() {
        install();
        set_phase("step 3 backward");
        let result = guard(
            || {
                let device_thread = std::thread::spawn(|| {
                    let _ = panic::catch_unwind(|| panic!("can't allocate buffer of size: 3221225472"));
                    let _ = panic::catch_unwind(|| panic!("Memory page 0 doesn't exist"));
                });
                device_thread.join().expect("the device thread catches its panics");
                panic!("called `Result::unwrap()` on an `Err` value: CallError");
            },
            || Some((1 << 30, 141 << 30)),
        );
        let oom = result.expect_err("out of memory");
        assert_eq!(oom.phase, "step 3 backward");
        assert_eq!(oom.requested, Some(3 << 30));
        let text = oom.to_string();
        assert!(
            text.contains("step 3 backward")
                && text.contains("3.00 GiB")
                && text.contains("1.00 GiB of 141.00 GiB free"),
            "{text}"
        );
        assert!(oom.training_advice().contains("gradient_checkpointing"));
        reset();
        assert_eq!(guard(|| 7, || None), Ok(7));
    }

    #[test]
    fn messages_and_sizes() {
        assert!(is_allocation_failure("can't allocate buffer of size: 12"));
        assert!(is_allocation_failure("called `Result::unwrap()` on an `Err` value: BufferTooBig { size: 99 }"));
        assert!(!is_allocation_failure("index out of bounds"));
        assert_eq!(requested_bytes("BufferTooBig { size: 99, backtrace: .. }"), Some(99));
        assert_eq!(requested_bytes("can't allocate buffer of size: 12"), Some(12));
        assert_eq!(requested_bytes("no number"), None);
    }
}

//! Errors at the C boundary: the status codes, the thread-local last-error message, and
//! [`guard`], which every entry point runs its body in so that no panic crosses into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use kiln_runtime::exec::RuntimeError;

/// `kiln_status` in `kiln.h`.
pub type KilnStatus = i32;

pub const KILN_OK: KilnStatus = 0;
pub const KILN_ERROR_INVALID_ARGUMENT: KilnStatus = 1;
pub const KILN_ERROR_LOAD: KilnStatus = 2;
pub const KILN_ERROR_INPUT: KilnStatus = 3;
pub const KILN_ERROR_RUN: KilnStatus = 4;
pub const KILN_ERROR_INTERNAL: KilnStatus = 5;

/// A failed call: its status code and the message `kiln_last_error` returns.
#[derive(Debug)]
pub struct Error {
    pub status: KilnStatus,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error { status: KILN_ERROR_INVALID_ARGUMENT, message: message.into() }
    }

    /// An error of the runtime, with its chain of causes.
    pub fn runtime(status: KilnStatus, e: &RuntimeError) -> Error {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        Error { status, message }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs cannot be in a C string; they never come from kiln's own messages.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The current thread's last error message; valid until it is replaced.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `body`, turning its error or a panic into a status code and the last-error message.
pub fn guard(body: impl FnOnce() -> Result<(), Error>) -> KilnStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => KILN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            let text = format!("internal error in kiln (please report it): {}", panic_message(&*payload));
            // Setting the message allocates; a second panic here must not escape either.
            let _ = catch_unwind(|| set_last_error(&text));
            KILN_ERROR_INTERNAL
        }
    }
}

/// Runs `body` for an entry point that returns a value and cannot report an error: a panic
/// gives `fallback` (and sets the last-error message).
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    let mut out = None;
    guard(|| {
        out = Some(body());
        Ok(())
    });
    out.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn errors_and_panics_become_statuses() {
        assert_eq!(guard(|| Ok(())), KILN_OK);
        assert_eq!(guard(|| Err(Error::invalid("bad\0thing"))), KILN_ERROR_INVALID_ARGUMENT);
        assert_eq!(last(), "bad\\0thing");
        assert_eq!(guard(|| Ok(())), KILN_OK);
        assert_eq!(last(), "bad\\0thing", "success leaves the message");
        assert_eq!(guard(|| panic!("boom {}", 1)), KILN_ERROR_INTERNAL);
        assert!(last().contains("boom 1"), "{}", last());
        assert_eq!(guard_value(7, || panic!("again")), 7);
        assert!(last().contains("again"));
    }

    #[test]
    fn the_message_is_per_thread() {
        guard(|| Err(Error::invalid("main thread")));
        std::thread::spawn(|| assert_eq!(last(), "")).join().unwrap();
        assert_eq!(last(), "main thread");
    }
}

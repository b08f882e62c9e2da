//! Closes the descriptors the caches let go of, on a thread of its own.
//!
//! A close(2) is not free here: evicting a full I/O cache closed 128 files
//! in the middle of one READ (0.7 ms, measured), and the handle cache
//! drops an eighth of 16,384 descriptors at once. Nothing waits on those
//! closes, so they leave the request path.

use std::sync::mpsc::{channel, Sender};

/// Something whose drop closes descriptors.
type Garbage = Box<dyn Send>;

#[derive(Debug)]
pub(crate) struct Closer {
    /// `None` if the thread could not be started: then drops happen inline.
    tx: Option<Sender<Garbage>>,
}

impl Closer {
    pub(crate) fn new() -> Closer {
        let (tx, rx) = channel::<Garbage>();
        let spawned = std::thread::Builder::new()
            .name("fs-closer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Ends when the backend (the sender) is dropped.
                for garbage in rx {
                    drop(garbage);
                }
            });
        Closer {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Drops `garbage` on the closer thread.
    pub(crate) fn later<T: Send + 'static>(&self, garbage: T) {
        match &self.tx {
            Some(tx) => {
                // A send fails only if the thread is gone: drop it here.
                if let Err(e) = tx.send(Box::new(garbage)) {
                    drop(e.0);
                }
            }
            None => drop(garbage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn garbage_is_dropped_on_the_thread() {
        let c = Closer::new();
        let item = Arc::new(5);
        c.later(Arc::clone(&item));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&item) > 1 {
            assert!(Instant::now() < deadline, "never dropped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

//! Tests that need a handler with side effects (crate-internal seam).

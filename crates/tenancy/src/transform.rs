//! The shared-mode schema transform.

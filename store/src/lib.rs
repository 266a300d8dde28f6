//! keynode store

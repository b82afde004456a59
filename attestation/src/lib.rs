//! Attestation evidence verification and launch-measurement prediction.

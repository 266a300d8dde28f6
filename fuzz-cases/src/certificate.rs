//! A peer's certificate, as the TLS verifiers see it: arbitrary DER into
//! the NodeId extraction. It must not panic; the seed corpus holds real
//! node certificates for the fuzzer to mutate.

/// The target.
pub fn run(input: &[u8]) {
    let _ = keynode_core::net::node_id_of(input);
}

#[cfg(test)]
mod tests {
    use keynode_core::claims::KeyPair;
    use keynode_core::net::{NodeCertificate, node_id_of};

    #[test]
    fn a_node_certificate_gives_its_node_id() {
        let certificate = NodeCertificate::new(&[5; 32]).expect("a certificate");
        let node_id = KeyPair::from_seed(&[5; 32]).expect("a key").node_id();
        assert_eq!(node_id_of(&certificate.certificate).ok(), Some(node_id));
    }
}

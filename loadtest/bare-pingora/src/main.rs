//! The benchmark floor: the least a Pingora reverse proxy can do — one round-robin pool, no
//! filters, no logging. `bare-pingora LISTEN UPSTREAM [THREADS]`.

/// mimalloc: fewer instructions per allocation than glibc malloc on the request path (the
/// benchmark floor, bare-pingora, uses it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(HTTPStatus(503), "no upstream"))?;
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    }
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: format!("/tmp/bare-pingora-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/bare-pingora-{}.sock", std::process::id()),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let lb = match LoadBalancer::try_from_iter([args[2].as_str()]) {
        Ok(lb) => lb,
        Err(e) => {
            eprintln!("bad upstream {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let mut svc = http_proxy_service(&server.configuration, Bare(Arc::new(lb)));
    svc.add_tcp(&args[1]);
    server.add_service(svc);
    server.run_forever()
}

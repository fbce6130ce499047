//! The brokers this build can use as its command queue. Each client is behind a cargo feature
//! (`activemq`, `rabbitmq`, `nats`) so the default build stays quick; asking for one that was not
//! built in is a clear error.

use std::sync::Arc;
use std::time::Duration;

use tally_core::CommandQueue;

use crate::cli::QueueKind;
use crate::config::BrokerConfig;

/// Connects to the broker, retrying with back-off while it cannot be reached, until `give_up_after`.
pub async fn connect(
    broker: &BrokerConfig,
    give_up_after: Duration,
) -> anyhow::Result<Arc<dyn CommandQueue>> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect_once(broker).await {
            Ok(q) => return Ok(q),
            Err(Missing(feature)) => anyhow::bail!(
                "this tally was built without {feature} support: build it with `--features {feature}`"
            ),
            Err(Failed(e)) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, ?backoff, kind = ?broker.kind, "broker not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(Failed(e)) => {
                anyhow::bail!("connecting to the {:?} broker: {e}", broker.kind)
            }
        }
    }
}

#[allow(dead_code)] // which variants are built depends on the broker features
enum ConnectError {
    Missing(&'static str),
    Failed(tally_core::Error),
}
use ConnectError::{Failed, Missing};

#[allow(unused_variables)] // `broker` is unused when no broker feature is built
async fn connect_once(broker: &BrokerConfig) -> Result<Arc<dyn CommandQueue>, ConnectError> {
    match broker.kind {
        QueueKind::Activemq => {
            #[cfg(feature = "activemq")]
            {
                return activemq(broker).await.map_err(Failed);
            }
            #[cfg(not(feature = "activemq"))]
            Err(Missing("activemq"))
        }
        QueueKind::Rabbitmq => {
            #[cfg(feature = "rabbitmq")]
            {
                return rabbitmq(broker).await.map_err(Failed);
            }
            #[cfg(not(feature = "rabbitmq"))]
            Err(Missing("rabbitmq"))
        }
        QueueKind::Nats => {
            #[cfg(feature = "nats")]
            {
                return nats(broker).await.map_err(Failed);
            }
            #[cfg(not(feature = "nats"))]
            Err(Missing("nats"))
        }
        QueueKind::Embedded | QueueKind::Postgres => Err(Failed(tally_core::Error::Unavailable(
            "not a broker".into(),
        ))),
    }
}

#[cfg(feature = "rabbitmq")]
async fn rabbitmq(broker: &BrokerConfig) -> Result<Arc<dyn CommandQueue>, tally_core::Error> {
    let mut options = tally_queue_rabbitmq::RabbitOptions::new(broker.url.clone());
    options.namespace = broker.namespace.clone();
    let queue: Arc<dyn CommandQueue> = tally_queue_rabbitmq::connect(options).await?;
    Ok(queue)
}

#[cfg(feature = "activemq")]
async fn activemq(broker: &BrokerConfig) -> Result<Arc<dyn CommandQueue>, tally_core::Error> {
    let mut options = tally_queue_activemq::ActiveMqOptions::new(broker.url.clone());
    options.namespace = broker.namespace.clone();
    let queue: Arc<dyn CommandQueue> = tally_queue_activemq::connect(options).await?;
    Ok(queue)
}

#[cfg(feature = "nats")]
async fn nats(broker: &BrokerConfig) -> Result<Arc<dyn CommandQueue>, tally_core::Error> {
    let mut options = tally_queue_nats::NatsOptions::new(broker.url.clone());
    options.namespace = broker.namespace.clone();
    let queue: Arc<dyn CommandQueue> = tally_queue_nats::connect(options).await?;
    Ok(queue)
}

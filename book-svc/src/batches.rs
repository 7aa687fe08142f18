//! Requests that arrive together, handled together: a few workers each take whatever requests
//! are waiting (up to a batch's size) and answer them all with one round of database work. A
//! request that arrives while a batch is being handled waits for the next one, never joins one
//! that started before it. With nothing else waiting, a request is a batch of one.
use std::future::Future;
use std::sync::{Arc, OnceLock};

use sea_orm::DbErr;
use tokio::sync::{Mutex, mpsc, oneshot};

/// What handles a batch: one answer per request, in order.
pub trait BatchHandler: Clone + Send + Sync + 'static {
    type Request: Clone + Send + 'static;
    type Answer: Send + 'static;

    fn handle(&self, batch: &[Self::Request]) -> impl Future<Output = Result<Vec<Self::Answer>, DbErr>> + Send;
}

type Reply<A> = oneshot::Sender<Result<A, Arc<DbErr>>>;
/// A request waiting for its batch, with where its answer goes.
type Job<H> = (<H as BatchHandler>::Request, Reply<<H as BatchHandler>::Answer>);

/// A handler's requests, batched.
#[derive(Clone)]
pub struct Batches<H: BatchHandler> {
    handler: H,
    workers: usize,
    max_batch: usize,
    /// Made on first use, when a runtime is sure to be there; the workers stop when the last
    /// clone is dropped.
    queue: Arc<OnceLock<mpsc::Sender<Job<H>>>>,
}

impl<H: BatchHandler> Batches<H> {
    /// `workers` batches handled at once, of `max_batch` requests at most.
    pub fn new(handler: H, workers: usize, max_batch: usize) -> Self {
        Self {
            handler,
            workers,
            max_batch,
            queue: Arc::default(),
        }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The answer to `request`, handled with the requests waiting beside it.
    ///
    /// # Errors
    /// Handling its batch failed, also when it was tried alone.
    pub async fn call(&self, request: H::Request) -> Result<H::Answer, DbErr> {
        let (reply, answer) = oneshot::channel();
        let stopped = || DbErr::Custom("the batch workers stopped".into());
        self.queue().send((request, reply)).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|shared| DbErr::Custom(shared.to_string()))
    }

    fn queue(&self) -> &mpsc::Sender<Job<H>> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(self.max_batch * self.workers);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.workers {
                tokio::spawn(work(self.handler.clone(), receiver.clone(), self.max_batch));
            }
            sender
        })
    }
}

/// One worker: takes every waiting request (up to `max_batch`), answers them from one call of
/// the handler, again until the queue closes. A batch that fails is handled again one request
/// at a time, so that one bad request fails alone.
async fn work<H: BatchHandler>(handler: H, queue: Arc<Mutex<mpsc::Receiver<Job<H>>>>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        let (requests, replies): (Vec<H::Request>, Vec<Reply<H::Answer>>) = batch.drain(..).unzip();
        match handler.handle(&requests).await {
            Ok(answers) => answer_each(replies, answers),
            Err(error) if requests.len() > 1 => {
                tracing::warn!(%error, requests = requests.len(), "a batch failed; handling each alone");
                for (request, reply) in requests.into_iter().zip(replies) {
                    let alone = handler.handle(std::slice::from_ref(&request)).await;
                    match alone {
                        Ok(answers) => answer_each(vec![reply], answers),
                        Err(error) => {
                            let _ = reply.send(Err(Arc::new(error)));
                        }
                    }
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn answer_each<A>(replies: Vec<Reply<A>>, answers: Vec<A>) {
    let mut answers = answers.into_iter();
    for reply in replies {
        let answer = answers
            .next()
            .ok_or_else(|| Arc::new(DbErr::Custom("a batch left a request unanswered".into())));
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Doubles numbers; a batch holding a negative one fails whole. Records each batch's size.
    #[derive(Clone, Default)]
    struct Doubler {
        sizes: Arc<StdMutex<Vec<usize>>>,
    }

    impl BatchHandler for Doubler {
        type Request = i32;
        type Answer = i32;

        async fn handle(&self, batch: &[i32]) -> Result<Vec<i32>, DbErr> {
            self.sizes.lock().expect("not poisoned").push(batch.len());
            tokio::task::yield_now().await;
            if batch.iter().any(|n| *n < 0) {
                return Err(DbErr::Custom("negative".into()));
            }
            Ok(batch.iter().map(|n| n * 2).collect())
        }
    }

    #[tokio::test]
    async fn requests_arriving_together_share_a_batch_and_a_bad_one_fails_alone() {
        let doubler = Doubler::default();
        let batches = Batches::new(doubler.clone(), 1, 64);
        let answers = futures::future::join_all((-1..40).map(|n| batches.call(n))).await;
        for (n, answer) in (-1..40).zip(answers) {
            match answer {
                Ok(doubled) => assert_eq!(doubled, n * 2),
                Err(error) => assert!(n < 0 && error.to_string().contains("negative"), "{n}: {error}"),
            }
        }
        let sizes = doubler.sizes.lock().expect("not poisoned").clone();
        assert!(
            sizes.iter().any(|size| *size > 1),
            "some requests shared a batch: {sizes:?}"
        );
        assert!(sizes.iter().all(|size| *size <= 64), "{sizes:?}");
    }
}

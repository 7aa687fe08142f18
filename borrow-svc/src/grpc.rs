//! The `library.borrow.v1.BorrowService` server: requests parsed at the edge, the circulation
//! desk called, errors mapped to status codes here and nowhere else.
use library_platform::grpc::{Reason, internal, invalid_field, parse_id, parse_user_id, refused};
use library_proto::borrow::borrow_service_server::BorrowService;
use library_proto::borrow::{
    BorrowRequest, ChangeDueDateRequest, GetLoanRequest, ListLoansRequest, ListLoansResponse, Loan as LoanMessage,
    LoanStatus as LoanStatusMessage, ReturnRequest, ReturnResponse,
};
use library_proto::time::{from_timestamp, to_timestamp};
use tonic::{Code, Request, Response, Status};

use crate::circulation::{Circulation, CirculationError, Loan, status_of};
use crate::domain::{LoanStatus, ReturnError};

impl From<CirculationError> for Status {
    fn from(error: CirculationError) -> Self {
        let message = error.to_string();
        match error {
            CirculationError::InvalidQuantity { max } => {
                invalid_field("quantity", format!("must be between 1 and {max}"))
            }
            CirculationError::Paging(e) => e.to_status(),
            CirculationError::Return(ReturnError::InvalidQuantity) => invalid_field("quantity", "must be at least 1"),
            CirculationError::OutOfStock { .. } => refused(Code::FailedPrecondition, Reason::OutOfStock, message),
            CirculationError::LimitReached { .. } => {
                refused(Code::FailedPrecondition, Reason::LoanLimitReached, message)
            }
            CirculationError::Return(ReturnError::ExceedsOutstanding { .. }) => {
                refused(Code::FailedPrecondition, Reason::ReturnExceedsLoan, message)
            }
            CirculationError::Return(ReturnError::NotActive(_)) | CirculationError::Closed(_) => {
                refused(Code::FailedPrecondition, Reason::LoanNotActive, message)
            }
            CirculationError::BookNotFound | CirculationError::LoanNotFound => Status::not_found(message),
            CirculationError::NotYourLoan => Status::permission_denied(message),
            CirculationError::Database(e) => internal("circulation database failure", &e),
        }
    }
}

fn status_message(status: LoanStatus) -> LoanStatusMessage {
    match status {
        LoanStatus::Pending => LoanStatusMessage::Pending,
        LoanStatus::Active => LoanStatusMessage::Active,
        LoanStatus::Returned => LoanStatusMessage::Returned,
        LoanStatus::Canceled => LoanStatusMessage::Canceled,
    }
}

fn to_message(loan: Loan) -> LoanMessage {
    let status = status_message(status_of(&loan));
    LoanMessage {
        id: loan.id,
        user_id: loan.user_id,
        book_id: loan.book_id,
        quantity: loan.quantity,
        returned_quantity: loan.returned_quantity,
        status: status as i32,
        borrowed_at: Some(to_timestamp(loan.borrowed_at)),
        due_at: Some(to_timestamp(loan.due_at)),
        late_fee: loan.late_fee,
        cancel_reason: loan.cancel_reason,
        updated_at: Some(to_timestamp(loan.updated_at)),
    }
}

fn idempotency_key(value: Option<String>) -> Result<Option<String>, Status> {
    match value.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()) {
        Some(k) if k.len() > 200 => Err(invalid_field("idempotency_key", "at most 200 characters")),
        other => Ok(other),
    }
}

/// The gRPC face of the circulation desk.
pub struct BorrowGrpc {
    pub circulation: Circulation,
}

#[tonic::async_trait]
impl BorrowService for BorrowGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, book_id = %request.get_ref().book_id))]
    async fn borrow(&self, request: Request<BorrowRequest>) -> Result<Response<LoanMessage>, Status> {
        let r = request.into_inner();
        let user = parse_user_id(&r.user_id)?;
        let book = parse_id("book_id", &r.book_id)?;
        let key = idempotency_key(r.idempotency_key)?;
        let loan = self.circulation.borrow(user, &book, r.quantity, key).await?;
        Ok(Response::new(to_message(loan)))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, loan_id = %request.get_ref().loan_id))]
    async fn r#return(&self, request: Request<ReturnRequest>) -> Result<Response<ReturnResponse>, Status> {
        let r = request.into_inner();
        let user = parse_user_id(&r.user_id)?;
        let loan = parse_id("loan_id", &r.loan_id)?;
        let outcome = self.circulation.return_loan(user, &loan, r.quantity).await?;
        Ok(Response::new(ReturnResponse {
            loan: Some(to_message(outcome.loan)),
            quantity: outcome.quantity,
            days_late: i32::try_from(outcome.days_late).unwrap_or(i32::MAX),
            late_fee: outcome.late_fee,
        }))
    }

    #[tracing::instrument(skip_all, fields(loan_id = %request.get_ref().loan_id))]
    async fn get_loan(&self, request: Request<GetLoanRequest>) -> Result<Response<LoanMessage>, Status> {
        let r = request.into_inner();
        let loan = parse_id("loan_id", &r.loan_id)?;
        let user = r.user_id.as_deref().map(parse_user_id).transpose()?;
        Ok(Response::new(to_message(self.circulation.get_loan(&loan, user).await?)))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn list_loans(&self, request: Request<ListLoansRequest>) -> Result<Response<ListLoansResponse>, Status> {
        let r = request.into_inner();
        let user = parse_user_id(&r.user_id)?;
        let status = match r.status.map(LoanStatusMessage::try_from) {
            None => None,
            Some(Ok(LoanStatusMessage::Pending)) => Some(LoanStatus::Pending),
            Some(Ok(LoanStatusMessage::Active)) => Some(LoanStatus::Active),
            Some(Ok(LoanStatusMessage::Returned)) => Some(LoanStatus::Returned),
            Some(Ok(LoanStatusMessage::Canceled)) => Some(LoanStatus::Canceled),
            Some(_) => return Err(invalid_field("status", "unknown loan status")),
        };
        let page = self
            .circulation
            .list_loans(user, status, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(ListLoansResponse {
            loans: page.loans.into_iter().map(to_message).collect(),
            next_page_token: page.next_page_token,
            total_count: page.total_count as i64,
        }))
    }

    #[tracing::instrument(skip_all, fields(loan_id = %request.get_ref().loan_id))]
    async fn change_due_date(&self, request: Request<ChangeDueDateRequest>) -> Result<Response<LoanMessage>, Status> {
        let r = request.into_inner();
        let loan = parse_id("loan_id", &r.loan_id)?;
        let due_at = r
            .due_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| invalid_field("due_at", "a valid timestamp is required"))?;
        Ok(Response::new(to_message(
            self.circulation.change_due_date(&loan, due_at).await?,
        )))
    }
}

import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_OPEN: _ClassVar[TaskState]
    TASK_STATE_CLOSED: _ClassVar[TaskState]

class ProviderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_STATE_UNSPECIFIED: _ClassVar[ProviderState]
    PROVIDER_STATE_ACTIVE: _ClassVar[ProviderState]
    PROVIDER_STATE_SUSPENDED: _ClassVar[ProviderState]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_ACTIVE: _ClassVar[AgentState]
    AGENT_STATE_SUSPENDED: _ClassVar[AgentState]
    AGENT_STATE_RETIRED: _ClassVar[AgentState]

class ApprovalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_STATE_UNSPECIFIED: _ClassVar[ApprovalState]
    APPROVAL_STATE_PENDING: _ClassVar[ApprovalState]
    APPROVAL_STATE_APPROVED: _ClassVar[ApprovalState]
    APPROVAL_STATE_DENIED: _ClassVar[ApprovalState]
    APPROVAL_STATE_EXPIRED: _ClassVar[ApprovalState]
    APPROVAL_STATE_CANCELLED: _ClassVar[ApprovalState]
    APPROVAL_STATE_COLLECTED: _ClassVar[ApprovalState]

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_STATE_PENDING: _ClassVar[LeaseState]
    LEASE_STATE_ACTIVE: _ClassVar[LeaseState]
    LEASE_STATE_REVOKING: _ClassVar[LeaseState]
    LEASE_STATE_REVOKED: _ClassVar[LeaseState]
    LEASE_STATE_FAILED: _ClassVar[LeaseState]

class CredentialShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_SHAPE_UNSPECIFIED: _ClassVar[CredentialShape]
    CREDENTIAL_SHAPE_REVOCABLE: _ClassVar[CredentialShape]
    CREDENTIAL_SHAPE_EXPIRY_ONLY: _ClassVar[CredentialShape]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_OPEN: TaskState
TASK_STATE_CLOSED: TaskState
PROVIDER_STATE_UNSPECIFIED: ProviderState
PROVIDER_STATE_ACTIVE: ProviderState
PROVIDER_STATE_SUSPENDED: ProviderState
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_ACTIVE: AgentState
AGENT_STATE_SUSPENDED: AgentState
AGENT_STATE_RETIRED: AgentState
APPROVAL_STATE_UNSPECIFIED: ApprovalState
APPROVAL_STATE_PENDING: ApprovalState
APPROVAL_STATE_APPROVED: ApprovalState
APPROVAL_STATE_DENIED: ApprovalState
APPROVAL_STATE_EXPIRED: ApprovalState
APPROVAL_STATE_CANCELLED: ApprovalState
APPROVAL_STATE_COLLECTED: ApprovalState
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_STATE_PENDING: LeaseState
LEASE_STATE_ACTIVE: LeaseState
LEASE_STATE_REVOKING: LeaseState
LEASE_STATE_REVOKED: LeaseState
LEASE_STATE_FAILED: LeaseState
CREDENTIAL_SHAPE_UNSPECIFIED: CredentialShape
CREDENTIAL_SHAPE_REVOCABLE: CredentialShape
CREDENTIAL_SHAPE_EXPIRY_ONLY: CredentialShape

class WatchApprovalRequest(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class CollectApprovalRequest(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("provider", "role", "scopes", "ttl")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    provider: str
    role: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    ttl: _duration_pb2.Duration
    def __init__(self, provider: _Optional[str] = ..., role: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class IssueRequest(_message.Message):
    __slots__ = ("task_id", "tool", "grants")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    tool: str
    grants: _containers.RepeatedCompositeFieldContainer[GrantRequest]
    def __init__(self, task_id: _Optional[str] = ..., tool: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[GrantRequest, _Mapping]]] = ...) -> None: ...

class IssueResponse(_message.Message):
    __slots__ = ("credentials", "approval_required")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[IssuedCredential]
    approval_required: Approval
    def __init__(self, credentials: _Optional[_Iterable[_Union[IssuedCredential, _Mapping]]] = ..., approval_required: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class IssuedCredential(_message.Message):
    __slots__ = ("lease", "credential", "notices")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    credential: Credential
    notices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ..., notices: _Optional[_Iterable[str]] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("bearer_token", "password", "aws_session")
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    AWS_SESSION_FIELD_NUMBER: _ClassVar[int]
    bearer_token: BearerToken
    password: Password
    aws_session: AwsSession
    def __init__(self, bearer_token: _Optional[_Union[BearerToken, _Mapping]] = ..., password: _Optional[_Union[Password, _Mapping]] = ..., aws_session: _Optional[_Union[AwsSession, _Mapping]] = ...) -> None: ...

class BearerToken(_message.Message):
    __slots__ = ("token", "token_type")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_type: str
    def __init__(self, token: _Optional[str] = ..., token_type: _Optional[str] = ...) -> None: ...

class Password(_message.Message):
    __slots__ = ("username", "password", "connection")
    class ConnectionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    connection: _containers.ScalarMap[str, str]
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., connection: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AwsSession(_message.Message):
    __slots__ = ("access_key_id", "secret_access_key", "session_token")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    secret_access_key: str
    session_token: str
    def __init__(self, access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., session_token: _Optional[str] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("lease_id", "ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("lease", "credential", "notices")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    credential: Credential
    notices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ..., notices: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class TaskContext(_message.Message):
    __slots__ = ("purpose", "environment", "data_classification", "ticket", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    environment: str
    data_classification: str
    ticket: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, purpose: _Optional[str] = ..., environment: _Optional[str] = ..., data_classification: _Optional[str] = ..., ticket: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartTaskRequest(_message.Message):
    __slots__ = ("task_id", "agent", "context", "deadline")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent: str
    context: TaskContext
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., agent: _Optional[str] = ..., context: _Optional[_Union[TaskContext, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CloseTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CloseTaskResponse(_message.Message):
    __slots__ = ("task", "revoked", "retrying", "failed")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    task: Task
    revoked: int
    retrying: int
    failed: int
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., revoked: _Optional[int] = ..., retrying: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task", "leases")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    task: Task
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "agent", "context", "state", "created_at", "created_by", "deadline", "closed_at", "closed_by", "close_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent: str
    context: TaskContext
    state: TaskState
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    deadline: _timestamp_pb2.Timestamp
    closed_at: _timestamp_pb2.Timestamp
    closed_by: str
    close_reason: str
    def __init__(self, task_id: _Optional[str] = ..., agent: _Optional[str] = ..., context: _Optional[_Union[TaskContext, _Mapping]] = ..., state: _Optional[_Union[TaskState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_by: _Optional[str] = ..., close_reason: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("agent", "task_id", "context", "tool", "grant", "action")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    agent: str
    task_id: str
    context: TaskContext
    tool: str
    grant: GrantRequest
    action: str
    def __init__(self, agent: _Optional[str] = ..., task_id: _Optional[str] = ..., context: _Optional[_Union[TaskContext, _Mapping]] = ..., tool: _Optional[str] = ..., grant: _Optional[_Union[GrantRequest, _Mapping]] = ..., action: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("decision", "policies", "policy_set", "notices", "explanation", "allowed")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    decision: str
    policies: _containers.RepeatedScalarFieldContainer[str]
    policy_set: str
    notices: _containers.RepeatedScalarFieldContainer[str]
    explanation: str
    allowed: bool
    def __init__(self, decision: _Optional[str] = ..., policies: _Optional[_Iterable[str]] = ..., policy_set: _Optional[str] = ..., notices: _Optional[_Iterable[str]] = ..., explanation: _Optional[str] = ..., allowed: _Optional[bool] = ...) -> None: ...

class ReloadPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPoliciesResponse(_message.Message):
    __slots__ = ("previous_digest", "policy_set")
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_FIELD_NUMBER: _ClassVar[int]
    previous_digest: str
    policy_set: PolicySet
    def __init__(self, previous_digest: _Optional[str] = ..., policy_set: _Optional[_Union[PolicySet, _Mapping]] = ...) -> None: ...

class GetPolicySetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicySet(_message.Message):
    __slots__ = ("digest", "policies")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    policies: int
    def __init__(self, digest: _Optional[str] = ..., policies: _Optional[int] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("name", "kind", "state", "state_changed_at", "state_changed_by", "state_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    state: ProviderState
    state_changed_at: _timestamp_pb2.Timestamp
    state_changed_by: str
    state_reason: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[ProviderState, str]] = ..., state_changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_changed_by: _Optional[str] = ..., state_reason: _Optional[str] = ...) -> None: ...

class SuspendProviderRequest(_message.Message):
    __slots__ = ("provider", "reason")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    provider: str
    reason: str
    def __init__(self, provider: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendProviderResponse(_message.Message):
    __slots__ = ("provider", "revoked", "retrying", "failed")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    revoked: int
    retrying: int
    failed: int
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ..., revoked: _Optional[int] = ..., retrying: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ResumeProviderRequest(_message.Message):
    __slots__ = ("provider", "reason")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    provider: str
    reason: str
    def __init__(self, provider: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RegisterAgentRequest(_message.Message):
    __slots__ = ("name", "owner", "team", "description", "risk_tier", "identity", "from_sighting")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RISK_TIER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    FROM_SIGHTING_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    team: str
    description: str
    risk_tier: str
    identity: IdentityBinding
    from_sighting: bool
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ..., description: _Optional[str] = ..., risk_tier: _Optional[str] = ..., identity: _Optional[_Union[IdentityBinding, _Mapping]] = ..., from_sighting: _Optional[bool] = ...) -> None: ...

class UpdateAgentRequest(_message.Message):
    __slots__ = ("agent", "owner", "team", "description", "risk_tier", "identity", "revision")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RISK_TIER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    agent: str
    owner: str
    team: str
    description: str
    risk_tier: str
    identity: IdentityBinding
    revision: int
    def __init__(self, agent: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ..., description: _Optional[str] = ..., risk_tier: _Optional[str] = ..., identity: _Optional[_Union[IdentityBinding, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class RetireAgentRequest(_message.Message):
    __slots__ = ("agent", "reason", "force")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    reason: str
    force: bool
    def __init__(self, agent: _Optional[str] = ..., reason: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RetireAgentResponse(_message.Message):
    __slots__ = ("agent", "revoked", "retrying", "failed")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    agent: Agent
    revoked: int
    retrying: int
    failed: int
    def __init__(self, agent: _Optional[_Union[Agent, _Mapping]] = ..., revoked: _Optional[int] = ..., retrying: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class AgentSelector(_message.Message):
    __slots__ = ("agent", "owner", "team")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    agent: str
    owner: str
    team: str
    def __init__(self, agent: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class SuspendAgentRequest(_message.Message):
    __slots__ = ("agents", "reason")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agents: AgentSelector
    reason: str
    def __init__(self, agents: _Optional[_Union[AgentSelector, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendAgentResponse(_message.Message):
    __slots__ = ("suspended", "already_suspended", "revoked", "retrying", "failed")
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    suspended: _containers.RepeatedCompositeFieldContainer[Agent]
    already_suspended: _containers.RepeatedScalarFieldContainer[str]
    revoked: int
    retrying: int
    failed: int
    def __init__(self, suspended: _Optional[_Iterable[_Union[Agent, _Mapping]]] = ..., already_suspended: _Optional[_Iterable[str]] = ..., revoked: _Optional[int] = ..., retrying: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ResumeAgentRequest(_message.Message):
    __slots__ = ("agents", "reason")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agents: AgentSelector
    reason: str
    def __init__(self, agents: _Optional[_Union[AgentSelector, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeAgentResponse(_message.Message):
    __slots__ = ("resumed", "not_suspended")
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    NOT_SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    resumed: _containers.RepeatedCompositeFieldContainer[Agent]
    not_suspended: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resumed: _Optional[_Iterable[_Union[Agent, _Mapping]]] = ..., not_suspended: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("owner", "team", "state", "page_size", "page_token")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    team: str
    state: AgentState
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., team: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[Agent]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[Agent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class IdentityBinding(_message.Message):
    __slots__ = ("issuer", "subject", "claims")
    class ClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    subject: str
    claims: _containers.ScalarMap[str, str]
    def __init__(self, issuer: _Optional[str] = ..., subject: _Optional[str] = ..., claims: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("name", "owner", "team", "description", "risk_tier", "identities", "managed_by", "state", "state_changed_at", "state_changed_by", "state_reason", "created_at", "created_by", "updated_at", "updated_by", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RISK_TIER_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    MANAGED_BY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    team: str
    description: str
    risk_tier: str
    identities: _containers.RepeatedCompositeFieldContainer[IdentityBinding]
    managed_by: str
    state: AgentState
    state_changed_at: _timestamp_pb2.Timestamp
    state_changed_by: str
    state_reason: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    revision: int
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ..., description: _Optional[str] = ..., risk_tier: _Optional[str] = ..., identities: _Optional[_Iterable[_Union[IdentityBinding, _Mapping]]] = ..., managed_by: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., state_changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_changed_by: _Optional[str] = ..., state_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("agent", "task_id", "state", "page_size", "page_token")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    task_id: str
    state: LeaseState
    page_size: int
    page_token: str
    def __init__(self, agent: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases", "next_page_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListSightingsRequest(_message.Message):
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class ListSightingsResponse(_message.Message):
    __slots__ = ("sightings",)
    SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    sightings: _containers.RepeatedCompositeFieldContainer[Sighting]
    def __init__(self, sightings: _Optional[_Iterable[_Union[Sighting, _Mapping]]] = ...) -> None: ...

class Sighting(_message.Message):
    __slots__ = ("issuer", "subject", "first_seen", "last_seen", "count")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    subject: str
    first_seen: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    count: int
    def __init__(self, issuer: _Optional[str] = ..., subject: _Optional[str] = ..., first_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("agent", "task_id", "group", "state", "page_size", "page_token")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    task_id: str
    group: str
    state: ApprovalState
    page_size: int
    page_token: str
    def __init__(self, agent: _Optional[str] = ..., task_id: _Optional[str] = ..., group: _Optional[str] = ..., state: _Optional[_Union[ApprovalState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals", "next_page_token")
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    next_page_token: str
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class DecideApprovalRequest(_message.Message):
    __slots__ = ("approval_id", "reason")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    reason: str
    def __init__(self, approval_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApprovalVote(_message.Message):
    __slots__ = ("by", "approve", "reason", "at")
    BY_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    by: str
    approve: bool
    reason: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, by: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("approval_id", "agent", "task_id", "tool", "grants", "group", "quorum", "policies", "state", "created_at", "expires_at", "votes", "approved_at", "collect_by", "collected_at", "ended_at", "ended_by", "end_reason")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    COLLECT_BY_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    agent: str
    task_id: str
    tool: str
    grants: _containers.RepeatedCompositeFieldContainer[GrantRequest]
    group: str
    quorum: int
    policies: _containers.RepeatedScalarFieldContainer[str]
    state: ApprovalState
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    votes: _containers.RepeatedCompositeFieldContainer[ApprovalVote]
    approved_at: _timestamp_pb2.Timestamp
    collect_by: _timestamp_pb2.Timestamp
    collected_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    ended_by: str
    end_reason: str
    def __init__(self, approval_id: _Optional[str] = ..., agent: _Optional[str] = ..., task_id: _Optional[str] = ..., tool: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[GrantRequest, _Mapping]]] = ..., group: _Optional[str] = ..., quorum: _Optional[int] = ..., policies: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[ApprovalState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., votes: _Optional[_Iterable[_Union[ApprovalVote, _Mapping]]] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., collect_by: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., collected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_by: _Optional[str] = ..., end_reason: _Optional[str] = ...) -> None: ...

class ReportAccessRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AccessReport(_message.Message):
    __slots__ = ("since", "until", "agents", "sightings", "replica")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    agents: _containers.RepeatedCompositeFieldContainer[AgentAccess]
    sightings: _containers.RepeatedCompositeFieldContainer[Sighting]
    replica: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agents: _Optional[_Iterable[_Union[AgentAccess, _Mapping]]] = ..., sightings: _Optional[_Iterable[_Union[Sighting, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...

class AgentAccess(_message.Message):
    __slots__ = ("agent", "owner", "team", "issuances", "used", "allowed_unused", "dormant")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ISSUANCES_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_UNUSED_FIELD_NUMBER: _ClassVar[int]
    DORMANT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    owner: str
    team: str
    issuances: int
    used: _containers.RepeatedCompositeFieldContainer[RoleUse]
    allowed_unused: _containers.RepeatedScalarFieldContainer[str]
    dormant: bool
    def __init__(self, agent: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ..., issuances: _Optional[int] = ..., used: _Optional[_Iterable[_Union[RoleUse, _Mapping]]] = ..., allowed_unused: _Optional[_Iterable[str]] = ..., dormant: _Optional[bool] = ...) -> None: ...

class RoleUse(_message.Message):
    __slots__ = ("provider", "role", "scopes", "count", "tools", "last_issued")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    LAST_ISSUED_FIELD_NUMBER: _ClassVar[int]
    provider: str
    role: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    count: int
    tools: _containers.RepeatedScalarFieldContainer[str]
    last_issued: _timestamp_pb2.Timestamp
    def __init__(self, provider: _Optional[str] = ..., role: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., tools: _Optional[_Iterable[str]] = ..., last_issued: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportAuditRequest(_message.Message):
    __slots__ = ("since", "until", "agent", "task_id", "owner", "event")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    agent: str
    task_id: str
    owner: str
    event: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent: _Optional[str] = ..., task_id: _Optional[str] = ..., owner: _Optional[str] = ..., event: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("seq", "ts", "event", "agent", "task_id", "json", "replica")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    ts: _timestamp_pb2.Timestamp
    event: str
    agent: str
    task_id: str
    json: str
    replica: str
    def __init__(self, seq: _Optional[int] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., agent: _Optional[str] = ..., task_id: _Optional[str] = ..., json: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "agent", "task_id", "provider", "role", "scopes", "tool", "state", "shape", "created_at", "issued_at", "expires_at", "revocation_reason", "revocation_attempts", "revocation_error", "revoked_at")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_REASON_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    agent: str
    task_id: str
    provider: str
    role: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    tool: str
    state: LeaseState
    shape: CredentialShape
    created_at: _timestamp_pb2.Timestamp
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revocation_reason: str
    revocation_attempts: int
    revocation_error: str
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, lease_id: _Optional[str] = ..., agent: _Optional[str] = ..., task_id: _Optional[str] = ..., provider: _Optional[str] = ..., role: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., tool: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., shape: _Optional[_Union[CredentialShape, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revocation_reason: _Optional[str] = ..., revocation_attempts: _Optional[int] = ..., revocation_error: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

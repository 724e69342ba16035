"""The generated gRPC stubs of Writ's whole API (``proto/writ/v1/writ.proto``),
for what the friendlier classes do not cover (operators, approvers,
auditors)::

    from writ_client.proto import writ_pb2, writ_pb2_grpc

    approvals = writ_pb2_grpc.ApprovalServiceStub(channel)
"""

from ._proto.writ.v1 import writ_pb2, writ_pb2_grpc

__all__ = ["writ_pb2", "writ_pb2_grpc"]

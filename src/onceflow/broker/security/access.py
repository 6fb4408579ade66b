"""The one question handlers ask: may the client of this request do this?"""

from __future__ import annotations

import logging
from typing import Any

from onceflow.broker.connection import current_client
from onceflow.broker.security.acls import CLUSTER_NAME, AclError, Operation, ResourceType
from onceflow.broker.security.session import current_session

__all__ = ["Operation", "ResourceType", "allowed"]

log = logging.getLogger(__name__)


def allowed(
    broker: Any, operation: Operation, resource_type: ResourceType, name: str = CLUSTER_NAME
) -> bool:
    """Whether the client whose request is being handled may do ``operation`` on the
    resource; always true when ACLs are off, false when the ACL file is unreadable."""
    authorizer = broker.security.authorizer
    if not authorizer.enabled:
        return True
    session = current_session()
    if session is None:
        return True
    try:
        return authorizer.authorize(
            session.principal, current_client().host, operation, resource_type, name
        )
    except AclError as exc:
        log.error("denying %s: %s", session.principal, exc)
        return False

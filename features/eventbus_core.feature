Feature: Publishing and subscribing on the event bus
  The EventBus module registers the "eventbus.provider" service in a modular
  application. Subscribers receive the events of their topic or topic pattern,
  one at a time in order or concurrently on a worker pool; the bus keeps recent
  events for a while, survives failing handlers and shuts down cleanly.

  Scenario: The module initialises with the documented defaults
    Given an event bus with the default configuration
    When the event bus application is initialised
    Then the service "eventbus.provider" is the event bus module, not yet running
    When the event bus application starts
    Then the event bus is running
    And the event bus runs the engines:
      | name    | type   |
      | default | memory |
    And the event bus settings, and the same on its engine "default", are:
      | setting                | value  |
      | engine                 | memory |
      | maxEventQueueSize      | 1000   |
      | defaultEventBufferSize | 10     |
      | workerCount            | 5      |
      | deliveryMode           | drop   |
      | eventTTL               | 3600   |
      | retentionDays          | 7      |
      | rotateSubscriberOrder  | true   |
    And the engine "default" delivers with a buffer of 10, 5 workers and mode "drop"

  Scenario: A subscriber receives a published event exactly once
    Given a running event bus with the default configuration
    And subscriber "alice" subscribes to "user.created"
    When the event bus publishes "user.created" with payload {"id": 1, "name": "Ada"}
    Then subscriber "alice" received exactly:
      | topic        | payload                  |
      | user.created | {"id": 1, "name": "Ada"} |
    And the event subscriber "alice" received is the one that was published
    And the event bus counts deliveries: 1, drops: 0, failures: 0

  Scenario: Several subscribers each receive the event once
    Given a running event bus with the default configuration
    And subscriber "alice" subscribes to "order.placed"
    And subscriber "bob" subscribes to "order.placed"
    And subscriber "carol" subscribes asynchronously to "order.placed"
    When the event bus publishes "order.placed" with payload {"order": 7}
    Then subscribers "alice, bob, carol" each received exactly:
      | topic        | payload      |
      | order.placed | {"order": 7} |
    And the event bus counts deliveries: 3, drops: 0, failures: 0

  Scenario: A wildcard matches by prefix, and "*" alone matches every topic
    Given a running event bus with the default configuration
    And subscriber "users" subscribes to "user.*"
    And subscriber "everything" subscribes to "*"
    When the event bus publishes "user.created" with payload 1
    And the event bus publishes "user.updated" with payload 2
    And the event bus publishes "order.placed" with payload 3
    And the event bus publishes "user" with payload 4
    And the event bus publishes "user.admin.login" with payload 5
    Then subscriber "users" received exactly:
      | topic            | payload |
      | user.created     | 1       |
      | user.updated     | 2       |
      | user.admin.login | 5       |
    And subscriber "everything" received exactly:
      | topic            | payload |
      | user.created     | 1       |
      | user.updated     | 2       |
      | order.placed     | 3       |
      | user             | 4       |
      | user.admin.login | 5       |

  Scenario: An asynchronous subscriber does not hold up the publisher
    Given a running event bus with the default configuration
    And subscriber "slow" subscribes asynchronously to "report.requested" with a handler that waits for a signal
    When the event bus publishes 3 numbered events on "report.requested"
    Then subscriber "slow" is handling 3 events at once
    When subscriber "slow" is signalled
    Then subscriber "slow" finished handling the numbers 1 to 3
    And the event bus counts deliveries: 3, drops: 0, failures: 0

  Scenario: Each subscription has its own id, topic and kind
    Given a running event bus with the default configuration
    When subscriber "a" subscribes to "user.created"
    And subscriber "b" subscribes to "user.*"
    And subscriber "c" subscribes asynchronously to "user.created"
    Then the subscriptions of "a, b, c" have distinct ids
    And the subscriptions are:
      | subscriber | topic        | asynchronous | engine  | active |
      | a          | user.created | false        | default | true   |
      | b          | user.*       | false        | default | true   |
      | c          | user.created | true         | default | true   |
    And the event bus lists the subscriptions of "a, b, c"

  Scenario: An unsubscribed handler receives nothing more, and unsubscribing twice is harmless
    Given a running event bus with the default configuration
    And subscriber "alice" subscribes to "user.created"
    And subscriber "bob" subscribes to "user.created"
    When the event bus publishes "user.created" with payload 1
    Then subscriber "alice" received exactly:
      | topic        | payload |
      | user.created | 1       |
    When subscriber "alice" unsubscribes
    And the event bus publishes "user.created" with payload 2
    Then subscriber "alice" received exactly:
      | topic        | payload |
      | user.created | 1       |
    And subscriber "bob" received exactly:
      | topic        | payload |
      | user.created | 1       |
      | user.created | 2       |
    And the subscriptions are:
      | subscriber | topic        | asynchronous | engine  | active |
      | alice      | user.created | false        | default | false  |
      | bob        | user.created | false        | default | true   |
    When subscriber "alice" unsubscribes again, through the bus and the subscription
    Then the event bus subscriber counts are:
      | topic        | subscribers |
      | user.created | 1           |
    And the event bus lists the subscriptions of "bob"

  Scenario: Topics are listed with their subscriber counts
    Given a running event bus with the default configuration
    And subscriber "a" subscribes to "user.created"
    And subscriber "b" subscribes to "user.created"
    And subscriber "c" subscribes to "user.*"
    And subscriber "d" subscribes to "order.placed"
    Then the event bus lists the topics "order.placed, user.*, user.created"
    And the event bus subscriber counts are:
      | topic        | subscribers |
      | user.created | 3           |
      | user.deleted | 1           |
      | order.placed | 1           |
      | invoice.sent | 0           |
    When subscriber "d" unsubscribes
    And subscriber "a" unsubscribes
    Then the event bus lists the topics "user.*, user.created"
    And the event bus subscriber counts are:
      | topic        | subscribers |
      | user.created | 2           |
      | order.placed | 0           |

  Scenario: The memory engine delivers in-process and in order
    Given a running event bus with the default configuration
    And subscriber "ordered" subscribes to "ticks"
    When the event bus publishes 200 numbered events on "ticks"
    Then subscriber "ordered" received the numbers 1 to 200 in order
    And subscriber "ordered" received the very payload objects that were published
    And the event bus counts deliveries: 200, drops: 0, failures: 0

  Scenario Outline: A failing <kind> handler is logged and counted, and keeps receiving
    Given a running event bus with the default configuration
    And subscriber "fragile" subscribes <how> "payment.received" with a handler that fails on payload "bad"
    When the event bus publishes "payment.received" with payload "bad"
    And the event bus publishes "payment.received" with payload "good"
    Then subscriber "fragile" received exactly:
      | topic            | payload |
      | payment.received | "bad"   |
      | payment.received | "good"  |
    And subscriber "fragile" finished handling exactly the payload "good"
    And the event bus logged a failure of subscriber "fragile" on "payment.received" with "ValueError: rejected 'bad'"
    And the event bus counts deliveries: 2, drops: 0, failures: 1

    Examples:
      | kind         | how               |
      | ordered      | to                |
      | asynchronous | asynchronously to |

  Scenario: Retained events expire after the TTL and are capped per topic
    Given an event bus configured with:
      """
      eventTTL = "30s"
      maxEventQueueSize = 3
      """
    And the event bus uses a test clock
    When the event bus application starts
    And the event bus publishes "audit.login" with payload 1
    And the test clock moves "10s" ahead
    And the event bus publishes 5 numbered events on "audit.logout"
    Then the event bus history of "audit.*" holds:
      | topic        | payload  |
      | audit.login  | 1        |
      | audit.logout | {"n": 3} |
      | audit.logout | {"n": 4} |
      | audit.logout | {"n": 5} |
    When subscriber "late" subscribes to "audit.*" with replay
    Then subscriber "late" received exactly:
      | topic        | payload  |
      | audit.login  | 1        |
      | audit.logout | {"n": 3} |
      | audit.logout | {"n": 4} |
      | audit.logout | {"n": 5} |
    When the test clock moves "25s" ahead
    Then the event bus history of "audit.*" holds:
      | topic        | payload  |
      | audit.logout | {"n": 3} |
      | audit.logout | {"n": 4} |
      | audit.logout | {"n": 5} |
    When the test clock moves "6s" ahead
    Then the event bus history of "audit.*" is empty

  Scenario: retentionDays caps how long events are kept, whatever the TTL
    Given an event bus configured with:
      """
      eventTTL = "30d"
      retentionDays = 1
      """
    And the event bus uses a test clock
    When the event bus application starts
    And the event bus publishes "audit.login" with payload 1
    And the test clock moves "23h" ahead
    Then the event bus history of "audit.login" holds:
      | topic       | payload |
      | audit.login | 1       |
    When the test clock moves "2h" ahead
    Then the event bus history of "audit.login" is empty

  Scenario: Shutdown lets in-flight handlers finish, then refuses to publish
    Given a running event bus configured with:
      """
      shutdownTimeout = "20s"
      """
    And subscriber "worker" subscribes asynchronously to "job.started" with a handler that waits for a signal
    And subscriber "ordered" subscribes to "job.*"
    When the event bus publishes "job.started" with payload 1
    Then subscriber "worker" is handling 1 events at once
    When the event bus application begins stopping
    Then the event bus is still stopping while subscriber "worker" handles its event
    When subscriber "worker" is signalled
    Then the event bus application has stopped
    And subscriber "worker" finished handling exactly the payload 1
    And the event bus counts deliveries: 2, drops: 0, failures: 0
    And publishing "job.started" fails because the bus is not started
    And the event bus has no topics and no subscriptions
    And no task of the event bus is left running

  Scenario: A handler still running at the shutdown timeout is counted as dropped
    Given a running event bus configured with:
      """
      shutdownTimeout = "200ms"
      """
    And subscriber "stuck" subscribes asynchronously to "job.started" with a handler that waits for a signal
    When the event bus publishes "job.started" with payload 1
    Then subscriber "stuck" is handling 1 events at once
    When the event bus application stops
    Then the event bus counts deliveries: 0, drops: 1, failures: 0
    And subscriber "stuck" finished handling nothing
    And no task of the event bus is left running

  Scenario: The bus can be started again after it stopped
    Given a running event bus with the default configuration
    And subscriber "before" subscribes to "user.created"
    When the event bus application stops
    And the event bus application starts
    And subscriber "after" subscribes to "user.created"
    And the event bus publishes "user.created" with payload 1
    Then subscriber "after" received exactly:
      | topic        | payload |
      | user.created | 1       |
    And subscriber "before" received nothing

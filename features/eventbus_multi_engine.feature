Feature: Several engines on one event bus
  One bus runs several engines at once. Routing rules, tried in order, send
  each topic to one engine (the first engine when no rule matches); each engine
  has its own delivery settings and counters, and one engine's trouble stays
  its own.

  Scenario: Two configured engines run under their names
    Given a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"
      config = { metricsInterval = "1h" }
      """
    Then the event bus runs the engines:
      | name   | type   |
      | memory | memory |
      | custom | custom |
    And the engine "custom" logs its metrics every 3600 seconds

  Scenario: Each topic is handled and counted by the engine it is routed to
    Given a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"

      [[routing]]
      topics = ["user.*"]
      engine = "memory"

      [[routing]]
      topics = ["analytics.*"]
      engine = "custom"
      """
    And subscriber "everything" subscribes to "*"
    When the event bus publishes these events one at a time:
      | topic              |
      | user.created       |
      | analytics.pageview |
      | analytics.click    |
    Then the events were handled on these engines:
      | topic              | engine |
      | user.created       | memory |
      | analytics.pageview | custom |
      | analytics.click    | custom |
    And the per-engine delivery counts are:
      | engine | delivered | dropped |
      | memory | 1         | 0       |
      | custom | 2         | 0       |
    And the custom engine "custom" counted the topics "analytics.click, analytics.pageview"
    And the router sends these topics to these engines:
      | topic              | engine |
      | user.created       | memory |
      | analytics.pageview | custom |

  Scenario: An engine type registered by the application handles the events routed to it
    Given the engine type "recording" is registered from the test
    And a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "audit"
      type = "recording"

      [[routing]]
      topics = ["audit.*"]
      engine = "audit"
      """
    And subscriber "auditor" subscribes to "audit.*"
    And subscriber "everything" subscribes to "*"
    When the event bus publishes these events one at a time:
      | topic        | payload |
      | audit.login  | 1       |
      | user.created | 2       |
      | audit.logout | 3       |
    Then the events were handled on these engines:
      | topic        | engine |
      | audit.login  | audit  |
      | user.created | memory |
      | audit.logout | audit  |
    And the recording engine "audit" was handed the topics "audit.login, audit.logout"
    And subscriber "auditor" received exactly:
      | topic        | payload |
      | audit.login  | 1       |
      | audit.logout | 3       |

  Scenario: Each engine applies its own buffer size and delivery mode
    Given a running event bus configured with:
      """
      [[engines]]
      name = "lossy"
      type = "memory"
      config = { defaultEventBufferSize = 1, deliveryMode = "drop" }

      [[engines]]
      name = "lossless"
      type = "memory"
      config = { defaultEventBufferSize = 2, deliveryMode = "block" }

      [[routing]]
      topics = ["lossy.*"]
      engine = "lossy"

      [[routing]]
      topics = ["lossless.*"]
      engine = "lossless"
      """
    And subscriber "slow" subscribes to "*" with a handler that waits for a signal
    When publisher "p1" publishes 10 numbered events on "lossy.tick" in the background
    And publisher "p2" publishes 10 numbered events on "lossless.tick" in the background
    Then publisher "p1" finishes all its publishes
    And the engine "lossy" dropped events while subscriber "slow" was held up
    And publisher "p2" is blocked after at most 3 of its 10 publishes
    And the engine "lossless" has dropped nothing
    When subscriber "slow" is signalled
    Then publisher "p2" finishes all its publishes
    And the engine "lossless" delivered all 10 events and dropped none
    And the engine "lossy" delivered and dropped 10 events in all
    And subscriber "slow" received the numbers 1 to 10 in order on "lossless.tick"

  Scenario: Subscriptions are counted per engine and in total
    Given a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"

      [[routing]]
      topics = ["analytics.*", "metrics.*"]
      engine = "custom"
      """
    And subscriber "users" subscribes to "user.created"
    And subscriber "analytics" subscribes to "analytics.*"
    And subscriber "cpu" subscribes asynchronously to "metrics.cpu"
    And subscriber "all" subscribes to "*"
    Then the subscriptions are routed to these engines:
      | subscriber | engine |
      | users      | memory |
      | analytics  | custom |
      | cpu        | custom |
    And subscriber "all" listens on the engines "custom, memory"
    And the engines count these subscribers:
      | engine | topic              | subscribers |
      | memory | user.created       | 2           |
      | custom | analytics.pageview | 2           |
      | custom | metrics.cpu        | 2           |
    And the event bus subscriber counts are:
      | topic              | subscribers |
      | user.created       | 2           |
      | analytics.pageview | 2           |
      | metrics.cpu        | 2           |
      | order.placed       | 1           |
    When the event bus publishes "user.created" with payload 1
    And the event bus publishes "analytics.pageview" with payload 2
    And the event bus publishes "metrics.cpu" with payload 3
    Then the per-engine delivery counts are:
      | engine | delivered | dropped |
      | memory | 2         | 0       |
      | custom | 4         | 0       |
    And the event bus counts deliveries: 6, drops: 0, failures: 0

  Scenario: The first matching rule wins, and unmatched topics go to the first engine
    Given a running event bus configured with:
      """
      [[engines]]
      name = "primary"
      type = "memory"

      [[engines]]
      name = "users"
      type = "memory"

      [[engines]]
      name = "audit"
      type = "custom"

      [[routing]]
      topics = ["user.admin.*"]
      engine = "audit"

      [[routing]]
      topics = ["user.*", "billing.*"]
      engine = "users"

      [[routing]]
      topics = ["billing.invoice.*"]
      engine = "audit"
      """
    And subscriber "everything" subscribes to "*"
    When the event bus publishes these events one at a time:
      | topic                |
      | user.admin.login     |
      | user.login           |
      | billing.invoice.sent |
      | order.placed         |
    Then the events were handled on these engines:
      | topic                | engine  |
      | user.admin.login     | audit   |
      | user.login           | users   |
      | billing.invoice.sent | users   |
      | order.placed         | primary |
    And the router sends these topics to these engines:
      | topic                | engine  |
      | user.admin.login     | audit   |
      | user.login           | users   |
      | billing.invoice.sent | users   |
      | order.placed         | primary |

  Scenario: Failing handlers on one engine do not stop delivery on another
    Given a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"

      [[routing]]
      topics = ["analytics.*"]
      engine = "custom"
      """
    And subscriber "broken" subscribes to "analytics.*" with a handler that always fails
    And subscriber "healthy" subscribes to "user.*"
    When the event bus publishes 5 numbered events on "analytics.pageview"
    And the event bus publishes 5 numbered events on "user.created"
    Then subscriber "healthy" received the numbers 1 to 5 in order
    And the per-engine delivery counts are:
      | engine | delivered | dropped | failed |
      | memory | 5         | 0       | 0      |
      | custom | 5         | 0       | 5      |

  Scenario: An engine that fails to start does not stop the others
    Given the engine type "unstartable" is registered from the test
    And a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "broken"
      type = "unstartable"

      [[routing]]
      topics = ["legacy.*"]
      engine = "broken"
      """
    Then the event bus logged that engine "broken" failed to start
    When subscriber "healthy" subscribes to "user.*"
    And subscriber "everything" subscribes to "*"
    And the event bus publishes "user.created" with payload 1
    Then subscriber "healthy" received exactly:
      | topic        | payload |
      | user.created | 1       |
    And subscriber "everything" received exactly:
      | topic        | payload |
      | user.created | 1       |
    And subscriber "everything" listens on the engines "memory"
    And publishing "legacy.sync" fails because engine "broken" is unavailable
    And subscribing to "legacy.sync" fails because no engine runs for it

  Scenario: Topics of every engine are discovered
    Given a running event bus configured with:
      """
      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"

      [[routing]]
      topics = ["analytics.*", "metrics.*"]
      engine = "custom"
      """
    And subscriber "a" subscribes to "user.created"
    And subscriber "b" subscribes to "analytics.pageview"
    And subscriber "c" subscribes to "metrics.*"
    Then the event bus lists the topics "analytics.pageview, metrics.*, user.created"
    And the engines list these topics among theirs:
      | engine | topics                        |
      | memory | user.created                  |
      | custom | analytics.pageview, metrics.* |

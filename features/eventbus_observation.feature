Feature: Observing the event bus
  The bus reports what it does to the application's observers as
  CloudEvents-shaped records: a type under "com.modular.eventbus.", the source
  "modular.eventbus", an id, a time and data naming the topic, subscription,
  engine or error concerned.

  Scenario: The loaded configuration is reported before the bus starts
    Given an event bus configured with:
      """
      [[engines]]
      name = "fast"
      type = "memory"

      [[engines]]
      name = "metrics"
      type = "custom"

      [[routing]]
      topics = ["analytics.*"]
      engine = "metrics"
      """
    When the event bus application starts
    Then the observer saw exactly one "config.loaded" record with data:
      | field   | value                                                                      |
      | engines | [{"name": "fast", "type": "memory"}, {"name": "metrics", "type": "custom"}] |
      | routing | [{"topics": ["analytics.*"], "engine": "metrics"}]                         |
    And the observer saw "config.loaded" before "bus.started"

  Scenario: Starting the bus is reported
    Given an event bus with the default configuration
    When the event bus application starts
    Then the observer saw exactly one "bus.started" record with data:
      | field   | value       |
      | engines | ["default"] |

  Scenario: Stopping the bus is reported
    Given a running event bus with the default configuration
    Then the observer saw no "bus.stopped" record
    When the event bus application stops
    Then the observer saw exactly one "bus.stopped" record with data:
      | field   | value       |
      | engines | ["default"] |
    And the observer saw "bus.started" before "bus.stopped"

  Scenario: A published message is reported
    Given a running event bus with the default configuration
    When the event bus publishes "user.created" with payload {"id": 1}
    Then the observer saw exactly one "message.published" record with data:
      | field    | value             |
      | topic    | user.created      |
      | event_id | [published event] |
      | engine   | default           |
      | tenant   | null              |

  Scenario: A received message is reported per subscription
    Given a running event bus with the default configuration
    And subscriber "alice" subscribes to "user.*"
    When the event bus publishes "user.created" with payload {"id": 1}
    Then the observer saw exactly one "message.received" record with data:
      | field           | value                |
      | topic           | user.created         |
      | event_id        | [published event]    |
      | subscription_id | [subscription alice] |
      | engine          | default              |
      | tenant          | null                 |

  Scenario: A failed message is reported with the error
    Given a running event bus with the default configuration
    And subscriber "fragile" subscribes to "payment.received" with a handler that fails on payload "bad"
    When the event bus publishes "payment.received" with payload "bad"
    Then the observer saw exactly one "message.failed" record with data:
      | field           | value                      |
      | topic           | payment.received           |
      | event_id        | [published event]          |
      | subscription_id | [subscription fragile]     |
      | engine          | default                    |
      | error           | ValueError: rejected 'bad' |
    And the observer saw no "message.received" record

  Scenario: A new subscription is reported
    Given a running event bus with the default configuration
    When subscriber "carol" subscribes asynchronously to "order.*"
    Then the observer saw exactly one "subscription.created" record with data:
      | field           | value                |
      | subscription_id | [subscription carol] |
      | topic           | order.*              |
      | engine          | default              |
      | is_async        | true                 |
      | tenant          | null                 |

  Scenario: A removed subscription is reported once
    Given a running event bus with the default configuration
    And subscriber "carol" subscribes to "order.placed"
    When subscriber "carol" unsubscribes
    And subscriber "carol" unsubscribes again, through the bus and the subscription
    Then the observer saw exactly one "subscription.removed" record with data:
      | field           | value                |
      | subscription_id | [subscription carol] |
      | topic           | order.placed         |
      | engine          | default              |

  Scenario: A topic is reported as created by its first subscriber only
    Given a running event bus with the default configuration
    When subscriber "first" subscribes to "invoice.sent"
    And subscriber "second" subscribes to "invoice.sent"
    Then the observer saw exactly one "topic.created" record with data:
      | field  | value        |
      | topic  | invoice.sent |
      | engine | default      |

  Scenario: A topic is reported as deleted when its last subscriber leaves
    Given a running event bus with the default configuration
    And subscriber "first" subscribes to "invoice.sent"
    And subscriber "second" subscribes to "invoice.sent"
    When subscriber "first" unsubscribes
    Then the observer saw no "topic.deleted" record
    When subscriber "second" unsubscribes
    Then the observer saw exactly one "topic.deleted" record with data:
      | field  | value        |
      | topic  | invoice.sent |
      | engine | default      |

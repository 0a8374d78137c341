Feature: Tenants on the event bus
  An event carries the tenant of its publisher. A tenant's subscriptions see
  only that tenant's events, wildcards included, and a tenant's config overlay
  may route that tenant's topics to other engines without touching anyone
  else's routing.

  Scenario: A tenant's event reaches that tenant's subscribers only
    Given a running event bus with the default configuration
    And the event bus tenants "tenant1, tenant2" are registered
    And subscriber "t1-login" of tenant "tenant1" subscribes to "user.login"
    And subscriber "t2-login" of tenant "tenant2" subscribes to "user.login"
    And subscriber "t2-everything" of tenant "tenant2" subscribes to "*"
    And inside the tenant context of "tenant2", subscriber "t2-context" subscribes to "user.*"
    And subscriber "untenanted" subscribes to "*"
    When tenant "tenant1" publishes "user.login" with payload {"user": "ada"}
    Then subscriber "t1-login" received exactly:
      | topic      | payload         |
      | user.login | {"user": "ada"} |
    And every event subscriber "t1-login" received carries the tenant "tenant1"
    And subscriber "t2-login" received nothing
    And subscriber "t2-everything" received nothing
    And subscriber "t2-context" received nothing
    And subscriber "untenanted" received nothing
    And the event bus counts deliveries: 1, drops: 0, failures: 0
    When inside the tenant context of "tenant2", the event bus publishes "user.login" with payload {"user": "bob"}
    Then subscribers "t2-login, t2-everything, t2-context" each received exactly:
      | topic      | payload         |
      | user.login | {"user": "bob"} |
    And every event subscriber "t2-everything" received carries the tenant "tenant2"
    And subscriber "t1-login" received exactly:
      | topic      | payload         |
      | user.login | {"user": "ada"} |
    And subscriber "untenanted" received nothing

  Scenario: Each tenant's overlay routes its topics to its own engine
    Given a running event bus configured with:
      """
      [[engines]]
      name = "archive"
      type = "memory"

      [[engines]]
      name = "memory"
      type = "memory"

      [[engines]]
      name = "custom"
      type = "custom"

      [[routing]]
      topics = ["orders.*"]
      engine = "archive"
      """
    When tenant "tenant1" is registered with the event bus overlay:
      """
      [[routing]]
      topics = ["orders.*"]
      engine = "memory"
      """
    And tenant "tenant2" is registered with the event bus overlay:
      """
      [[routing]]
      topics = ["orders.*"]
      engine = "custom"
      """
    And the event bus tenants "tenant3" are registered
    Then "orders.created" is routed per tenant to these engines:
      | tenant  | engine  |
      | tenant1 | memory  |
      | tenant2 | custom  |
      | tenant3 | archive |
      |         | archive |
    When subscriber "t1" of tenant "tenant1" subscribes to "orders.*"
    And subscriber "t2" of tenant "tenant2" subscribes to "orders.*"
    And subscriber "base" subscribes to "orders.*"
    And the event bus publishes these events one at a time:
      | tenant  | topic          | payload |
      | tenant1 | orders.created | 1       |
      | tenant2 | orders.created | 2       |
      |         | orders.created | 3       |
    Then the events were handled on these engines:
      | tenant  | topic          | engine  |
      | tenant1 | orders.created | memory  |
      | tenant2 | orders.created | custom  |
      |         | orders.created | archive |
    And subscriber "t1" received exactly:
      | topic          | payload |
      | orders.created | 1       |
    And subscriber "t2" received exactly:
      | topic          | payload |
      | orders.created | 2       |
    And subscriber "base" received exactly:
      | topic          | payload |
      | orders.created | 3       |
    And the custom engine "custom" counted the topics "orders.created"

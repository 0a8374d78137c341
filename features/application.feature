Feature: The modular application container
  Modules declare what they depend on and what they offer; the application
  orders their lifecycle, connects their services and hands each one its
  validated, layered and tenant-aware configuration.

  Scenario: Modules start in dependency order and stop in reverse
    Given an application with these modules:
      | module | depends on |
      | api    | cache, db  |
      | cache  | db         |
      | db     |            |
    When the application starts
    And the application stops
    Then the modules were initialised in the order "db, cache, api"
    And the modules were started in the order "db, cache, api"
    And the modules were stopped in the order "api, cache, db"

  Scenario: A service registered by one module is used by another
    Given an application with a "greeter" module that requires the service "clock.now"
    And a "clock" module that provides the service "clock.now"
    When the application starts
    Then the "clock" module was initialised before the "greeter" module
    And the "greeter" module holds the very service the "clock" module provided
    And the application lists the service "clock.now"

  Scenario: A bad config value fails init naming its path
    Given a settings file "settings.toml":
      """
      [default.pipeline]
      workerCount = 2

      [[default.pipeline.engines]]
      type = "memory"

      [[default.pipeline.engines]]
      type = "carrier-pigeon"
      """
    And an application using the settings with the modules "source, pipeline"
    When the application starts
    Then starting fails with a config error naming "pipeline.engines[1].type" and "carrier-pigeon"
    And no module was initialised

  Scenario: An environment variable overrides one key of the settings file
    Given a settings file "settings.toml":
      """
      [default.pipeline]
      workerCount = 2

      [[default.pipeline.engines]]
      type = "memory"
      """
    And the environment variable "MODULAR_PIPELINE__WORKERCOUNT" is "8"
    And an application using the settings with the modules "pipeline"
    When the application starts
    Then the "pipeline" config has 8 workers and 1 engine

  Scenario: A tenant overlay changes one tenant's config only
    Given a settings file "settings.toml":
      """
      [default.greeter]
      greeting = "Hello"
      punctuation = "!"

      [tenants.acme.greeter]
      greeting = "Howdy"
      """
    And a settings file "tenants/globex.toml":
      """
      [greeter]
      punctuation = "?!"
      """
    And an application using the settings with the modules "greeter"
    When the application starts
    And the tenants "acme, globex, initech" are registered
    Then the greeter of tenant "acme" says "Howdy" with "!"
    And the greeter of tenant "globex" says "Hello" with "?!"
    And the greeter of tenant "initech" says "Hello" with "!"
    And the greeter without a tenant says "Hello" with "!"

  Scenario: A module failing to stop does not keep the others running
    Given an application with these modules:
      | module | depends on |
      | api    | db         |
      | db     |            |
      | worker | api        |
    And the "api" module fails when stopped
    When the application starts
    And the application stops
    Then stopping fails with a lifecycle error naming "api"
    And the modules were stopped in the order "worker, api, db"

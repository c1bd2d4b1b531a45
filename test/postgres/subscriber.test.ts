/**
 * The subscriber conformance suite (consumer groups, ownership, rebalancing, retries,
 * dead letters, the delivery checker) on PostgreSQL.
 */
import { SubscriberSuite } from "effect-chronicle/testing"
import { postgresFile, postgresStore } from "../support/postgres.js"

const { server, schemas } = postgresFile()

SubscriberSuite.conformance("PostgreSQL", (config) => postgresStore(server, schemas, config))

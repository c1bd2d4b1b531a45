/**
 * The aggregate, snapshot and projection conformance suite on PostgreSQL.
 */
import { AggregateSuite } from "effect-chronicle/testing"
import { postgresFile, postgresStore } from "../support/postgres.js"

const { server, schemas } = postgresFile()

AggregateSuite.conformance("PostgreSQL", (config) => postgresStore(server, schemas, config))

/**
 * Shipment tracking: the contract. An order is placed, packed, sent out for delivery and
 * received; every step is an event of the order's stream `shipments-<orderId>`.
 */
import { Schema } from "effect"
import { Contract } from "effect-chronicle"

export const Shipments = Contract.make("shipments", {
  OrderPlaced: { orderId: Schema.String, product: Schema.String, quantity: Schema.Int, email: Contract.personal(Schema.String) },
  Packing: { orderId: Schema.String, station: Schema.String },
  OnDelivery: { orderId: Schema.String, carrier: Schema.String },
  OnReceived: { orderId: Schema.String, signedBy: Schema.String }
})

export type ShipmentEvent = Contract.Event<typeof Shipments>

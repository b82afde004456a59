//! Confidential launches: the contract binding, the predicted launch measurement and the launch manifest (being written).
